"""Two CPU processes (torchrun, gloo) predict an iterable set as one process does: every example once, in the
dataset's order, with ``predictions.jsonl`` matching, whether accelerate dispatches batches or not; and
evaluate it with every example once, reading it once for several evaluations."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from test_ddp import _run, _torchrun

from hf_cotmi.teacher.serve import free_local_port

sys.path.insert(0, str(Path(__file__).parent / "scripts"))
from ddp_predict import records  # noqa: E402

SCRIPT = Path(__file__).parent / "scripts" / "ddp_predict.py"
SETS = ("sized", "iterable", "iterable-2-shards", "torch-iterable")


@pytest.mark.slow
def test_two_processes_predict_iterable_sets_in_order(tmp_path: Path) -> None:
    _run([sys.executable, str(SCRIPT), str(tmp_path / "one")], tmp_path)
    _run(
        [_torchrun(), "--nproc_per_node", "2", "--master_port", str(free_local_port()), str(SCRIPT),
         str(tmp_path / "two")],
        tmp_path,
    )  # fmt: skip
    (single,) = [json.loads((tmp_path / "one" / "report_rank0.json").read_text())]
    ranks = [json.loads((tmp_path / "two" / f"report_rank{r}.json").read_text()) for r in (0, 1)]
    expected = records()
    reference = single["default/sized"]
    assert [g.strip() for g in reference["gold"]] == [r["label"] for r in expected]
    assert len({r["label"] for r in expected}) > 1  # so a gold label out of place would show
    for rank, report in enumerate((single, *ranks)):
        for dispatch in ("default", "no-dispatch"):
            for name in SETS:
                case = f"{dispatch}/{name}"
                got = report[case]
                assert "error" not in got, (rank, case, got)
                assert got["predicted_rows"] == len(expected), (rank, case)
                assert [g.strip() for g in got["gold"]] == [r["label"] for r in expected], (rank, case)
                assert got["predictions"] == reference["predictions"], (rank, case)  # the untrained model's
                evaluated = report[f"evaluate/{case}"]
                assert "error" not in evaluated, (rank, case, evaluated)
                # every example once (the evaluation order may differ from the dataset's on two processes)
                assert sorted(evaluated["gold"]) == sorted(r["label"] for r in expected), (rank, case)
                if rank == 2:  # the second process of two writes no predictions.jsonl
                    assert "jsonl" not in got
                    continue
                lines = got["jsonl"]
                assert [line["prediction"] for line in lines] == reference["predictions"], (rank, case)
                if name != "torch-iterable":  # a torch iterable set has no column names to find "input" in
                    assert [line["input"] for line in lines] == [r["input"] for r in expected], (rank, case)
            twice = report[f"evaluate-twice/{dispatch}"]
            assert "error" not in twice, (rank, dispatch, twice)
            assert [sorted(gold) for gold in twice["gold"]] == [sorted(r["label"] for r in expected)] * 2
            # one process reads the set at each evaluation; two read it into memory once
            assert twice["reads"] == (2 if report is single else 1), (rank, dispatch)
