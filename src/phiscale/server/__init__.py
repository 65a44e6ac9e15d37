"""The shared tracking server behind `phiscale-server`, and a one-node server for tests.

    process.py   a real `mlflow server` process group: free ports, health, start, stop the whole group
    database.py  its store: a private PostgreSQL 15 cluster in DIR/pg (or sqlite in WAL mode), sized
                 for the server's threads
    auth.py      MLflow's basic-auth app: its secret and admin, users, grants
    stack.py     the three kept in one directory (DIR/phiscale-server.json): start, stop, status

May import `phiscale.tracking.store` (to describe a store's errors), `errors` and `paths`. Used by
`phiscale-server` and the tests, never by training: a run reaches the server only over HTTP.
"""
