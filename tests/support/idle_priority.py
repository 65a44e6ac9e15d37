"""Commands that take only the cores' idle time: nice 19, in a session whose autogroup is niced to 19 too.

With the kernel's autogroups (/proc/sys/kernel/sched_autogroup_enabled = 1 here) the scheduler shares the
CPU between sessions first and only then, by nice, between the processes of one session. Measured with
two busy loops niced to 19 beside two at nice 0 on the 2 cores: in a session of their own the niced
loops took two thirds of the CPU (the foreground ran at 31% of its speed alone); in pytest's own session
they left it ~95%, but would compete as one session's equal share with the servers, SLURM jobs and
Chromium, which run in sessions of their own; in a session whose autogroup is niced to 19 the
foreground kept ~90% of its speed. So each command gets such a session (its own process group too,
which `os.killpg` ends). Without autogroups the nice alone does it. `setpriv --pdeathsig KILL`: the command dies with pytest even when pytest is killed outright.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

NICENESS = 19


def start_idle(cmd: list[str], **popen_kwargs) -> subprocess.Popen:
    """`cmd` started at the lowest priority, as above."""
    process = subprocess.Popen(["setpriv", "--pdeathsig", "KILL", "nice", "-n", str(NICENESS), *cmd],
                               start_new_session=True, **popen_kwargs)
    try:
        Path(f"/proc/{process.pid}/autogroup").write_text(str(NICENESS))
    except OSError:  # no autogroups on this kernel (or the command is already gone): the nice is enough
        pass
    return process
