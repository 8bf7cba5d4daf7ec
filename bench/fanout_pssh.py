#!/usr/bin/env python3
"""parallel-ssh (libssh2) arm of bench/fanout.py: the same per-host commands, all at once.

    fanout_pssh.py HOSTS_FILE CMD_DIR IDENTITY POOL_SIZE

parallel-ssh does not check host keys against known_hosts (libssh2's client has no such
policy here): it does less than the other arms. Prints ``failed=N``; exits 1 if any failed.
"""

from __future__ import annotations

import sys
from pathlib import Path

from pssh.clients import ParallelSSHClient


def main() -> int:
    hosts = Path(sys.argv[1]).read_text().split()
    cmds = Path(sys.argv[2])
    client = ParallelSSHClient(hosts, user="root", pkey=sys.argv[3], pool_size=int(sys.argv[4]), num_retries=1,
                               timeout=10, allow_agent=False, identity_auth=False)
    output = client.run_command("%s", host_args=[(cmds / h).read_text() for h in hosts], stop_on_errors=False)
    client.join(output, consume_output=True)
    failed = sum(1 for o in output if o.exception is not None or o.exit_code != 0)
    print(f"failed={failed}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
