"""What the strict JSON Lines reader costs: ``read_jsonl`` against plain ``json.loads`` per line.

The strict reader decodes the bytes itself (to name the line of a non-UTF-8 byte), split at ``"\\n"``
only, and parse every object through a duplicate-key hook. The baseline is what the loaders did before:
iterate the text file and ``json.loads`` each line. Both run interleaved in one process on the same file;
the median of ``--repeats`` runs of each is reported, and the last line is JSON with the ratio::

    python examples/benchmarks/strict_reading.py                         # 50,000 synthetic DSS-like records
    python examples/benchmarks/strict_reading.py --file ../shared/data/dss/esnli/esnli_test.json
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import time
from pathlib import Path

from hf_cotmi.data.jsonfiles import read_jsonl


def baseline_jsonl(path: Path) -> list[tuple[int, dict]]:
    records = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if line.strip():
                records.append((number, json.loads(line)))
    return records


def synthetic_file(directory: str, records: int) -> Path:
    rng = random.Random(0)
    words = "the a dog cat runs sits on mat because it is tired so answer entailment neutral".split()
    path = Path(directory) / "synthetic.json"
    with open(path, "w", encoding="utf-8") as handle:
        for index in range(records):
            text = " ".join(rng.choice(words) for _ in range(40))
            record = {"premise": text, "hypothesis": text[:80], "label": index % 3, "id": index}
            handle.write(json.dumps(record) + "\n")
    return path


def main(argv: list[str] | None = None) -> dict[str, float | str]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--file", type=Path, help="a JSON Lines file (default: a synthetic one)")
    parser.add_argument("--records", type=int, default=50_000, help="records in the synthetic file")
    parser.add_argument("--repeats", type=int, default=5)
    options = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as directory:
        path = options.file or synthetic_file(directory, options.records)
        assert read_jsonl(path) == baseline_jsonl(path), "the readers disagree"
        times: dict[str, list[float]] = {"baseline": [], "strict": []}
        for _ in range(options.repeats):
            for name, reader in (("baseline", baseline_jsonl), ("strict", read_jsonl)):
                start = time.perf_counter()
                reader(path)
                times[name].append(time.perf_counter() - start)
        medians = {name: statistics.median(values) for name, values in times.items()}
        size = path.stat().st_size / 1e6
        for name, seconds in medians.items():
            print(f"{name:>8}: {seconds * 1000:8.1f} ms for {size:.1f} MB")
        summary = {
            "file": str(path),
            "strict_over_baseline": round(medians["strict"] / medians["baseline"], 3),
        }
        print(json.dumps(summary))
        return summary


if __name__ == "__main__":
    main()
