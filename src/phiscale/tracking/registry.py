"""The Model Registry: a finished run's model as a new version of a name, and the `best` alias.

`best` points at the version with the highest `val/top1_best` (a version tag set when the version
is created), never at a worse one, and concurrent registrations (an array of sweep points ending
together) cannot race it onto a worse one: MLflow has no compare-and-set for aliases, so each
registration, after setting the alias, reads every version and the alias again and repairs it until
both agree (`settle_best_alias`). The last writer always re-reads after its write, so it sees every
version created before it; a version created later is settled by its own registration. The alias's
first write is itself a race: MLflow's SQL store sets an alias with a read then an insert
(`session.merge`), so two first writers collide on the alias table's unique key and the loser gets
an IntegrityError; that loser reads again and, the alias now existing, updates it.

A twin name (`NAME-images`, the image-file model of the same network) follows its original: each of
its versions is tagged with the model id of the NAME version it was made from, and its `best` is the
twin of NAME's `best` (by score, as for NAME, only while that twin is not registered yet).
"""

from __future__ import annotations

import math

from phiscale.errors import PhiscaleError

BEST_ALIAS = "best"
SCORE_TAG = "phiscale.val_top1_best"
MODEL_ID_TAG = "phiscale.model_id"
TWIN_NAME_TAG, TWIN_MODEL_TAG = "phiscale.twin_of", "phiscale.twin_model_id"  # on NAME-images' versions
SETTLE_ROUNDS = 50
# How SQLAlchemy's sqlite and PostgreSQL drivers word a second insert of one alias (see the module doc).
KEY_COLLISION = ("IntegrityError", "UniqueViolation", "UNIQUE constraint", "duplicate key")


def check_name(name: str) -> str:
    """A registered model name MLflow takes (not empty, no '/' or ':', which would end a models:/ URI)."""
    if not name or any(c in name for c in "/:@") or name != name.strip():
        raise PhiscaleError(f"tracking.register={name!r} is not a model name: use letters, digits, '-', '_' or '.'")
    return name


def score_of(version) -> float:
    try:
        return float(version.tags.get(SCORE_TAG, "nan"))
    except (TypeError, ValueError):
        return math.nan


def best_version(versions, twin_model_id: str | None = None) -> str | None:
    """The twin of `twin_model_id` (the model of the original's `best`) when there is one; else the
    version with the highest score, the earliest of equal ones (a tie never moves `best`)."""
    twins = [v for v in versions if twin_model_id and v.tags.get(TWIN_MODEL_TAG) == twin_model_id]
    if twins:
        return str(min(int(v.version) for v in twins))
    scored = [v for v in versions if not math.isnan(score_of(v))]
    if not scored:
        return None
    return str(max(scored, key=lambda v: (score_of(v), -int(v.version))).version)


def register_version(mlflow, name: str, *, model_id: str, run_id: str, score: float, tracking_uri: str,
                     twin_of: tuple[str, str] | None = None) -> str:
    """Version `name` for LoggedModel `model_id` (created once: a resend finds it by its tag), then
    settle `best`; returns the version. `twin_of` (original name, its version's model id) makes the
    version a twin that follows the original's `best`. (With a sqlite store MLflow resolves the `models:/<id>` source
    in the process's global tracking URI, not the client's (its own TODO in
    `SqlAlchemyStore.create_model_version`): set to `tracking_uri` for that call.)"""
    from mlflow.exceptions import MlflowException

    try:
        mlflow.create_registered_model(name)
    except MlflowException as err:
        if "RESOURCE_ALREADY_EXISTS" not in str(err.error_code):
            raise
    existing = [v for v in all_versions(mlflow, name) if v.tags.get(MODEL_ID_TAG) == model_id]
    if existing:
        version = str(existing[0].version)
    else:
        import mlflow as fluent

        previous = fluent.get_tracking_uri()
        fluent.set_tracking_uri(tracking_uri)
        tags = {SCORE_TAG: f"{score:.6f}", MODEL_ID_TAG: model_id}
        if twin_of:
            tags.update({TWIN_NAME_TAG: twin_of[0], TWIN_MODEL_TAG: twin_of[1]})
        try:
            created = mlflow.create_model_version(name, source=f"models:/{model_id}", run_id=run_id, model_id=model_id,
                                                  tags=tags)
        finally:
            fluent.set_tracking_uri(previous)
        version = str(created.version)
    settle_best_alias(mlflow, name)
    return version


def all_versions(mlflow, name: str) -> list:
    escaped = name.replace("'", "\\'")
    return list(mlflow.search_model_versions(f"name = '{escaped}'", max_results=10_000))


def current_alias(mlflow, name: str) -> str | None:
    aliases = mlflow.get_registered_model(name).aliases or {}
    return str(aliases[BEST_ALIAS]) if BEST_ALIAS in aliases else None


def original_best_model(mlflow, versions) -> str | None:
    """For a twin name: the model id of its original's `best` version; None otherwise or while unset."""
    from mlflow.exceptions import MlflowException

    original = next((v.tags[TWIN_NAME_TAG] for v in versions if TWIN_NAME_TAG in v.tags), None)
    if original is None:
        return None
    try:
        return mlflow.get_model_version_by_alias(original, BEST_ALIAS).tags.get(MODEL_ID_TAG)
    except MlflowException:
        return None


def settle_best_alias(mlflow, name: str) -> str | None:
    """Point `best` at the best version, then re-read until the store agrees (see the module doc)."""
    from mlflow.exceptions import MlflowException

    for _ in range(SETTLE_ROUNDS):
        versions = all_versions(mlflow, name)
        best = best_version(versions, original_best_model(mlflow, versions))
        if best is None or current_alias(mlflow, name) == best:
            return best
        try:
            mlflow.set_registered_model_alias(name, BEST_ALIAS, best)
        except MlflowException as err:
            if not any(word in str(err) for word in KEY_COLLISION):
                raise
    raise RuntimeError(f"the `{BEST_ALIAS}` alias of {name} did not settle in {SETTLE_ROUNDS} rounds")
