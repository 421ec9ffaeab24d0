"""Run ``hf-cotmi`` (``hf_cotmi.cli.main``) in this process and record, in ``REPORT_DIR/rank{RANK}.json``,
what the launcher's processes left behind when ``main`` returned: its exit status, the time it returned and
whether the process group is still open.

``torchrun --nproc_per_node 2 ddp_cli_main.py REPORT_DIR train ...`` is ``torchrun ... -m hf_cotmi.cli train
...`` with that record; the process then exits as the console script does.
"""

from __future__ import annotations

import json
import os
import sys
import time

from hf_cotmi.cli import main as hf_cotmi_main


def record() -> int:
    report_dir, argv = sys.argv[1], sys.argv[2:]
    status = hf_cotmi_main(argv)
    returned_at = time.time()
    distributed = sys.modules.get("torch.distributed")
    open_group = bool(distributed is not None and distributed.is_initialized())
    os.makedirs(report_dir, exist_ok=True)
    with open(os.path.join(report_dir, f"rank{os.environ.get('RANK', '0')}.json"), "w") as handle:
        json.dump({"status": status, "returned_at": returned_at, "process_group_open": open_group}, handle)
    return status


if __name__ == "__main__":
    sys.exit(record())
