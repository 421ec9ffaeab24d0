"""Teacher generation against real HTTP servers on 127.0.0.1.

- A fault-injecting OpenAI-compatible server written here (standard library): canned, well-formed
  chain-of-thought answers, and on a schedule 500s, 429s with Retry-After, dropped connections and slow
  answers. Every record must end up exactly once; a run killed with SIGKILL and rerun must end with the same
  files as an uninterrupted run.
- A real ``transformers serve`` with a tiny Llama built in code (its text is noise), through the real HTTP
  API, and the local backend on the same model: greedy texts must match.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from hf_cotmi import build_tiny_seq2seq, build_word_tokenizer, generate_rationales, load_cot_dataset
from hf_cotmi.cli import main
from hf_cotmi.data.jsonfiles import DataFormatError
from hf_cotmi.teacher import LocalCausalBackend, OpenAICompatibleBackend, RetryPolicy, TeacherRequestError
from hf_cotmi.teacher.command import generate_rationales_command
from hf_cotmi.teacher.serve import served_by_transformers
from hf_cotmi.teacher.store import SettingsMismatchError
from hf_cotmi.teacher.tiny import save_tiny_causal_teacher

ROOT = Path(__file__).resolve().parents[1]
QUESTION = re.compile(r"Q: What is (\d+) plus (\d+)\?\nA:\s*$")
SECRET = "sk-test-do-not-write-7f3a"
SUMMARY_KEYS = ["total", "parsed", "unparsable", "agreed", "dropped", "written", "retries"]


def canned_answer(prompt: str, seed: int | None) -> str:
    """A deterministic chain-of-thought answer for 'What is A plus B?'.

    A % 7 == 0: no answer sentence (unparsable); A % 5 == 0: a wrong sum (disagrees with the gold label);
    a sampled request with seed % 3 == 2: a wrong sum too (for self-consistency).
    """
    match = QUESTION.search(prompt)
    if match is None:
        return "I was not asked anything."
    a, b = int(match.group(1)), int(match.group(2))
    if a % 7 == 0:
        return f"I think about {a} and {b} but cannot decide."
    c = b + 1 if a % 5 == 0 or (seed is not None and seed % 3 == 2) else b
    return (
        f"We add {a} and {c}. {a} + {c} is {a + c}. The answer is ({a} + {c}).\n\nQ: What is 1 plus 1?\nA: 2"
    )


def cut_off_answer(fault: str, prompt: str) -> str:
    """A generic-task answer ('So the answer is ...') to 'What is A plus B?', cut off where ``fault`` says, as
    a server cuts a text at ``max_tokens`` (``finish_reason: "length"``)."""
    a, b = map(int, QUESTION.search(prompt).groups())
    whole = f"We add {a} and {b}. So the answer is {a + b}.\n\nQ: What is 1 plus 1?\nA: 2"
    ends = {
        "cut-in-answer": whole.index(".\n") - 1,  # 'So the answer is 1' of 14
        "cut-after-answer": whole.index(" plus 1?"),  # in an invented next question
        "cut-in-reasoning": whole.index(" So"),  # before any answer
    }
    return whole[: ends[fault]]


class FaultServer:
    """OpenAI-compatible chat/completions on 127.0.0.1 with scheduled faults (by request number)."""

    def __init__(
        self,
        faults: dict[int, str] | None = None,
        delay: float = 0.0,
        slow: float = 1.5,
        reply_model: str | None = None,
        drip: float = 0.1,
        drip_bytes: int = 40,
    ):
        """``reply_model``: the model name every reply reports (default: the one asked for, as vLLM does).
        Faults "drip-headers" and "drip-body" send ``drip_bytes`` bytes of the reply's head or body one at a
        time, ``drip`` seconds apart, then the rest at once; "other-model" reports model 'another-model'."""
        self.faults, self.delay, self.slow = dict(faults or {}), delay, slow
        self.reply_model, self.drip, self.drip_bytes = reply_model, drip, drip_bytes
        self.requests = 0
        self.answered: list[str] = []  # the prompt's question of each 200 answer
        self.authorizations: set[str] = set()
        self.log: list[
            tuple[int, float, str]
        ] = []  # (request number, arrival time, question) of every request
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def do_POST(self):  # noqa: N802 - the http.server API
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                question = (body.get("prompt") or body.get("messages", [{}])[-1].get("content", "")).rsplit(
                    "Q: ", 1
                )[-1]
                with server.lock:
                    server.requests += 1
                    number = server.requests
                    server.authorizations.add(self.headers.get("Authorization", ""))
                    server.log.append((number, time.monotonic(), question))
                fault = server.faults.get(number)
                if fault == "drop":
                    self.connection.shutdown(socket.SHUT_RDWR)
                    self.close_connection = True
                    return
                if fault == "401":
                    return self._reply(401, {"error": {"message": "invalid api key"}})
                if fault == "400":
                    return self._reply(400, {"error": {"message": "context length exceeded"}})
                if fault == "html":  # a proxy's error page with status 200
                    page = b"<html><body>502 Bad Gateway</body></html>"
                    self.send_response(200)
                    self.send_header("Content-Type", "text/html")
                    self.send_header("Content-Length", str(len(page)))
                    self.end_headers()
                    self.wfile.write(page)
                    return
                if fault == "not-utf8":  # a 200 whose body is not UTF-8, which JSON must be
                    text = b'{"choices": [{"index": 0, "message": {"role": "assistant", "content": "We add \xff"}}]}'
                    return self._reply(200, None, body=text)
                if fault == "error-body":  # a gateway's error in a 200 reply, instead of a completion
                    return self._reply(200, {"error": {"message": "upstream model overloaded", "code": 502}})
                if fault == "cut-json":  # a 200 whose JSON body ends early (a proxy, a server that crashed)
                    return self._reply(
                        200, None, body=b'{"id": "r", "object": "chat.completion", "choices": [{"ind'
                    )
                if fault in ("500", "501", "503"):
                    return self._reply(int(fault), {"error": {"message": "scheduled failure"}})
                if fault == "429":
                    return self._reply(429, {"error": {"message": "slow down"}}, {"Retry-After": "1"})
                if fault == "429-day":  # a proxy's quota: come back tomorrow
                    return self._reply(429, {"error": {"message": "quota"}}, {"Retry-After": "86400"})
                if fault == "slow":
                    time.sleep(server.slow)
                time.sleep(server.delay)
                cut = fault is not None and fault.startswith("cut-") and fault != "cut-json"
                if self.path.endswith("/chat/completions"):
                    prompt = body["messages"][-1]["content"]
                    text = cut_off_answer(fault, prompt) if cut else canned_answer(prompt, body.get("seed"))
                    choice = {
                        "index": 0,
                        "message": {"role": "assistant", "content": text},
                        "finish_reason": "length" if cut else "stop",
                    }
                    if fault == "null-message":  # a reply some servers give for a filtered answer
                        choice["message"] = None
                    elif fault == "refusal":  # the OpenAI API's refusal: no content, a refusal text
                        choice["message"] = {"role": "assistant", "content": None, "refusal": "I can't help."}
                    elif fault == "content-parts":  # content as a list of parts, not a string
                        choice["message"]["content"] = [{"type": "text", "text": text}]
                    kind = "chat.completion"
                else:
                    prompt = body["prompt"]
                    text = cut_off_answer(fault, prompt) if cut else canned_answer(prompt, body.get("seed"))
                    choice = {"index": 0, "text": text, "finish_reason": "length" if cut else "stop"}
                    kind = "text_completion"
                with server.lock:
                    server.answered.append(prompt.rsplit("Q: ", 1)[-1])
                model = "another-model" if fault == "other-model" else server.reply_model or body["model"]
                self._reply(
                    200,
                    {"id": f"r{number}", "object": kind, "created": 0, "model": model, "choices": [choice]},
                    drip=fault[len("drip-") :] if fault is not None and fault.startswith("drip-") else None,
                )

            def _reply(self, status, payload, headers=None, body=None, drip=None):
                data = json.dumps(payload).encode() if body is None else body
                if drip is not None:  # "headers" or "body": that part's first bytes one at a time
                    fields = {"Content-Type": "application/json", "Content-Length": str(len(data))}
                    head = f"HTTP/1.1 {status} OK\r\n" + "".join(f"{k}: {v}\r\n" for k, v in fields.items())
                    whole = (head + "\r\n").encode() + data
                    start = 0 if drip == "headers" else len(whole) - len(data)
                    self.wfile.write(whole[:start])
                    for at in range(start, start + server.drip_bytes):
                        self.wfile.write(whole[at : at + 1])
                        time.sleep(server.drip)
                    self.wfile.write(whole[start + server.drip_bytes :])
                    return
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(data)

        class QuietServer(ThreadingHTTPServer):
            def handle_error(self, request, client_address):  # a client that gave up on a slow answer
                pass

        self.httpd = QuietServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> FaultServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def write_inputs(path: Path, count: int, *, gold: bool = True) -> list[dict]:
    rows = []
    for a in range(1, count + 1):
        row = {"input": f"What is {a} plus {a + 2}?", "id": f"q{a}"}
        if gold:
            row["label"] = str(2 * a + 2)
        rows.append(row)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return rows


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


FAST_RETRIES = RetryPolicy(max_retries=4, initial_delay=0.01, max_delay=0.05, jitter=0.5)


def test_faults_are_retried_and_every_record_is_written_exactly_once(tmp_path, monkeypatch):
    inputs = tmp_path / "in.jsonl"
    write_inputs(inputs, 20)
    out = tmp_path / "out.jsonl"
    faults = {1: "500", 2: "429", 4: "drop", 6: "slow", 9: "503", 10: "500", 15: "drop"}
    monkeypatch.setenv("TEST_TEACHER_KEY", SECRET)
    with FaultServer(faults) as server:
        summary = generate_rationales(
            inputs,
            out,
            base_url=server.url,
            model="fake-teacher",
            task="arithmetic",
            filter="mark",
            concurrency=3,
            request_timeout=0.5,
            retry_policy=FAST_RETRIES,
            api_key_env="TEST_TEACHER_KEY",
            progress=False,
        )
    # the 429 (request 2) said Retry-After: 1; its retry came no sooner (the backoff alone is <= 0.075 s)
    _, refused_at, refused_question = server.log[1]
    retried_at = min(at for number, at, question in server.log if number > 2 and question == refused_question)
    assert retried_at - refused_at >= 1.0
    assert server.authorizations == {f"Bearer {SECRET}"}
    # records 7 and 14 do not parse; 5, 10, 15, 20 give a wrong sum
    assert summary.counts() == {
        "total": 20,
        "parsed": 18,
        "unparsable": 2,
        "agreed": 14,
        "dropped": 0,
        "written": 18,
        "retries": 7,
    }
    written = lines(out)
    rejects = lines(tmp_path / "out.rejects.jsonl")
    assert [line["source_index"] for line in written + rejects] != []
    assert sorted(line["source_index"] for line in written + rejects) == list(range(20))
    assert [line["source_index"] for line in written] == sorted(line["source_index"] for line in written)
    assert {line["id"] for line in rejects} == {"q7", "q14"} and rejects[0]["reason"] == "unparsable"
    first = written[0]
    assert (
        first["input"] == "What is 1 plus 3?"
        and first["label"] == "4"
        and first["teacher_label"] == "(1 + 3)"
    )
    assert first["rationale"] == "We add 1 and 3. 1 + 3 is 4." and first["agrees_with_label"] is True
    assert {line["id"] for line in written if line["agrees_with_label"] is False} == {
        "q5",
        "q10",
        "q15",
        "q20",
    }
    # every question was answered (a timed-out request is answered again: the server may see it twice)
    assert len(set(server.answered)) == 20
    for path in tmp_path.iterdir():
        assert SECRET not in path.read_text(), path

    data, report = load_cot_dataset(out, return_report=True)
    assert data["train"].num_rows == 18 and report.splits["train"].missing_rationales == 0

    # a rerun with the same settings has nothing to do; other settings are refused unless forced
    with FaultServer() as server:
        again = generate_rationales(
            inputs,
            out,
            base_url=server.url,
            model="fake-teacher",
            task="arithmetic",
            filter="mark",
            progress=False,
        )
        assert server.requests == 0 and again.counts() == {**summary.counts(), "retries": 0}
        assert again.resumed == 20
        with pytest.raises(SettingsMismatchError, match="filter: 'mark' -> 'drop'"):
            generate_rationales(
                inputs,
                out,
                base_url=server.url,
                model="fake-teacher",
                task="arithmetic",
                filter="drop",
                progress=False,
            )


def test_drop_filter_completions_api_and_no_gold_labels(tmp_path):
    inputs = tmp_path / "in.csv"
    inputs.write_text(
        "input,label\n" + "".join(f"What is {a} plus {a + 2}?,{2 * a + 2}\n" for a in range(1, 11))
    )
    out = tmp_path / "dropped.jsonl"
    with FaultServer() as server:
        summary = generate_rationales(
            inputs,
            out,
            base_url=server.url,
            model="m",
            api="completions",
            task="arithmetic",
            filter="drop",
            progress=False,
        )
    assert summary.counts() == {
        "total": 10,
        "parsed": 9,
        "unparsable": 1,
        "agreed": 7,
        "dropped": 2,
        "written": 7,
        "retries": 0,
    }
    rejects = lines(tmp_path / "dropped.rejects.jsonl")
    assert [(r["source_index"], r["reason"]) for r in rejects] == [
        (4, "disagrees_with_label"),
        (6, "unparsable"),
        (9, "disagrees_with_label"),
    ]
    assert (
        rejects[0]["rationale"] == "We add 5 and 8. 5 + 8 is 13." and rejects[0]["teacher_label"] == "(5 + 8)"
    )

    unlabelled = tmp_path / "unlabelled.jsonl"
    write_inputs(unlabelled, 5, gold=False)
    with FaultServer() as server:
        summary = generate_rationales(
            unlabelled, tmp_path / "u.jsonl", base_url=server.url, model="m", task="arithmetic", filter="drop",
            progress=False,
        )  # fmt: skip
    assert (summary.parsed, summary.agreed, summary.dropped, summary.written) == (5, 0, 0, 5)
    assert [line["label"] for line in lines(tmp_path / "u.jsonl")][4] == "(5 + 8)"  # the teacher's label


def test_self_consistency_sends_separate_seeded_requests_and_votes(tmp_path):
    inputs = tmp_path / "in.jsonl"
    write_inputs(inputs, 6)
    out = tmp_path / "sc.jsonl"
    with FaultServer() as server:
        summary = generate_rationales(
            inputs,
            out,
            base_url=server.url,
            model="m",
            task="arithmetic",
            num_samples=3,
            seed=0,
            progress=False,
        )
        assert server.requests == 18  # N separate requests, not n=3
    written = lines(out)
    # record 5 always sums wrong (all 3 samples agree); the others agree 2 of 3
    assert summary.counts()["written"] == 6 and summary.agreement_rate == pytest.approx((5 * 2 / 3 + 1) / 6)
    record = written[0]  # seeds 0, 1, 2: the third sample (seed 2) gives a wrong sum
    assert record["teacher_answers"] == ["(1 + 3)", "(1 + 3)", "(1 + 4)"]
    assert record["teacher_label"] == "(1 + 3)" and record["teacher_agreement"] == pytest.approx(2 / 3)
    assert record["teacher_rationales"] == ["We add 1 and 3. 1 + 3 is 4."] * 2


def test_a_request_that_keeps_failing_stops_the_run_and_a_rerun_finishes(tmp_path):
    inputs = tmp_path / "in.jsonl"
    write_inputs(inputs, 8)
    out = tmp_path / "out.jsonl"
    faults = {number: "500" for number in range(4, 40)}
    with FaultServer(faults) as server:
        with pytest.raises(TeacherRequestError, match=r"HTTP 500 .*gave up after 2 retries") as error:
            generate_rationales(
                inputs, out, base_url=server.url, model="m", task="arithmetic", concurrency=1,
                retry_policy=RetryPolicy(max_retries=2, initial_delay=0.01, max_delay=0.02), progress=False,
            )  # fmt: skip
    assert error.value.summary.written == 3 and len(lines(out)) == 3
    with FaultServer() as server:
        summary = generate_rationales(
            inputs, out, base_url=server.url, model="m", task="arithmetic", progress=False
        )
        assert server.requests == 5
    assert summary.resumed == 3 and summary.parsed + summary.unparsable == 8


def test_an_integer_temperature_resumes_like_the_same_float(tmp_path):
    # temperature=0 and the default 0.0 (what the command passes) hashed differently: the rerun was refused
    # with "1 other settings hash(es)" though no setting differed
    inputs = tmp_path / "in.jsonl"
    write_inputs(inputs, 4)
    out = tmp_path / "out.jsonl"
    with FaultServer() as server:
        common = {"base_url": server.url, "model": "m", "task": "arithmetic", "progress": False}
        generate_rationales(inputs, out, temperature=0, top_p=1, max_records=2, **common)
        summary = generate_rationales(inputs, out, temperature=0.0, top_p=1.0, **common)
        assert server.requests == 4
    assert summary.resumed == 2 and summary.complete


def test_a_client_error_is_not_retried_and_a_changed_input_is_refused(tmp_path):
    inputs = tmp_path / "in.jsonl"
    write_inputs(inputs, 3)
    out = tmp_path / "out.jsonl"
    with FaultServer({1: "401"}) as server:
        with pytest.raises(TeacherRequestError, match="HTTP 401 .*invalid api key") as error:
            generate_rationales(inputs, out, base_url=server.url, model="m", concurrency=1, progress=False)
        assert server.requests == 1 and error.value.summary.retries == 0
        generate_rationales(
            inputs, out, base_url=server.url, model="m", task="arithmetic", force=True, progress=False
        )
    rows = [json.loads(line) for line in inputs.read_text().splitlines()]
    rows[1]["input"] = "What is 100 plus 1?"
    inputs.write_text("".join(json.dumps(row) + "\n" for row in rows))
    with pytest.raises(
        ValueError, match=r"out\.jsonl: the line for source_index 1 has input 'What is 2 plus 4\?'"
    ):
        generate_rationales(
            inputs, out, base_url="http://127.0.0.1:9/v1", model="m", task="arithmetic", progress=False
        )


def test_a_server_error_a_retry_cannot_mend_is_not_retried(tmp_path):
    """501 Not Implemented (an endpoint the server lacks) failed only after about a minute of retries."""
    inputs = tmp_path / "in.jsonl"
    write_inputs(inputs, 2)
    with FaultServer({1: "501"}) as server:
        with pytest.raises(TeacherRequestError, match="HTTP 501") as error:
            generate_rationales(
                inputs, tmp_path / "out.jsonl", base_url=server.url, model="m", concurrency=1, progress=False
            )
        assert server.requests == 1 and error.value.summary.retries == 0


def test_a_rejected_request_names_its_record_and_a_page_that_is_no_completion_is_retried(tmp_path):
    inputs = tmp_path / "in.jsonl"
    write_inputs(inputs, 4)
    out = tmp_path / "out.jsonl"
    with FaultServer({3: "400"}) as server:
        with pytest.raises(TeacherRequestError, match=r"record (\d+) \(sample 0\): HTTP 400") as error:
            generate_rationales(inputs, out, base_url=server.url, model="m", concurrency=1, progress=False)
        asked = server.log[2][2]  # the third request's question: "What is A plus ..."
    record = int(re.search(r"record (\d+)", str(error.value)).group(1))
    assert asked.startswith(f"What is {record + 1} plus")  # write_inputs numbers questions from 1
    assert "context length exceeded" in str(error.value)
    with pytest.raises(ValueError, match=r"output_file '.*in\.jsonl' is also the source"):
        generate_rationales(inputs, inputs, base_url="http://127.0.0.1:9/v1", model="m", progress=False)
    with pytest.raises(ValueError, match=r"rejects_file '.*o\.jsonl' is also output_file"):
        generate_rationales(
            inputs, tmp_path / "o.jsonl", rejects_file=tmp_path / "o.jsonl", base_url="http://127.0.0.1:9/v1",
            model="m", progress=False,
        )  # fmt: skip
    with FaultServer({1: "html", 2: "html"}) as server:
        summary = generate_rationales(
            inputs,
            out,
            base_url=server.url,
            model="m",
            concurrency=1,
            progress=False,
            retry_policy=FAST_RETRIES,
        )
    assert summary.complete and summary.retries == 2
    with FaultServer({n: "html" for n in range(1, 9)}) as server:
        with pytest.raises(TeacherRequestError, match=r"record \d+ .*not a completion: .*Bad Gateway"):
            generate_rationales(
                inputs, tmp_path / "other.jsonl", base_url=server.url, model="m", concurrency=1,
                progress=False, retry_policy=RetryPolicy(max_retries=1, initial_delay=0.01, max_delay=0.02),
            )  # fmt: skip


def test_a_reply_without_a_message_names_its_record_instead_of_an_attribute_error(tmp_path):
    """``message: null`` in a 200 reply stopped the run with "AttributeError: 'NoneType' object has no
    attribute 'content'", which named no record."""
    inputs = tmp_path / "in.jsonl"
    write_inputs(inputs, 3)
    out = tmp_path / "out.jsonl"
    once = RetryPolicy(max_retries=1, initial_delay=0.01, max_delay=0.02)
    common = {"model": "m", "task": "arithmetic", "concurrency": 1}
    with FaultServer({2: "null-message", 3: "null-message"}) as server:
        with pytest.raises(TeacherRequestError) as error:
            generate_rationales(inputs, out, base_url=server.url, retry_policy=once, progress=False, **common)
        asked = server.log[1][2]  # the second request's question: record 1
    message = str(error.value)
    assert "AttributeError" not in message and asked.startswith("What is 2 plus")
    assert re.search(r"^record 1 \(sample 0\): .*choices\[0\]\.message is null; expected the text in "
                     r"choices\[0\]\.message\.content; gave up after 1 retries", message), message  # fmt: skip
    assert error.value.summary.written == 1 and len(lines(out)) == 1  # what finished is kept
    # a reply without text once among good ones is retried like any other odd reply
    with FaultServer({1: "null-message"}) as server:
        summary = generate_rationales(
            inputs, out, base_url=server.url, retry_policy=once, progress=False, **common
        )
    assert summary.complete and summary.retries == 1


@pytest.mark.parametrize("choices", ["abc", {"0": "x"}, 7])
def test_choices_that_are_not_a_list_are_named_as_such(choices):
    """``choices`` of the wrong kind was reported as "choices[0].message is null" (the first character of a
    string has no message)."""
    from types import SimpleNamespace

    from hf_cotmi.teacher.backends import OpenAICompatibleBackend, RetryableError

    backend = SimpleNamespace(api="chat", base_url="http://127.0.0.1:9/v1")
    with pytest.raises(RetryableError, match=rf"choices is a {type(choices).__name__}, not a list"):
        OpenAICompatibleBackend._completion_text(backend, SimpleNamespace(choices=choices))


def test_a_refusal_is_the_teachers_answer_a_reject_not_a_retry_or_a_stop(tmp_path, caplog):
    """A refusal is deterministic (a rerun gets it again): it goes to the rejects file with its text, and the
    run goes on; retrying it, then stopping, left a run that could never get past the record."""
    inputs = tmp_path / "in.jsonl"
    write_inputs(inputs, 2)
    once = RetryPolicy(max_retries=1, initial_delay=0.01, max_delay=0.02)
    common = {"model": "m", "task": "arithmetic", "concurrency": 1, "retry_policy": once, "progress": False}
    with FaultServer({2: "refusal"}) as server, caplog.at_level(logging.WARNING):
        summary = generate_rationales(inputs, tmp_path / "a.jsonl", base_url=server.url, **common)
        assert server.requests == 2  # no retry
    assert summary.complete and summary.unparsable == 1 and summary.retries == 0
    (reject,) = [json.loads(line) for line in (tmp_path / "a.rejects.jsonl").read_text().splitlines()]
    assert reject["teacher_outputs"] == ["I can't help."] and reject["reason"] == "unparsable"
    assert "refused" in caplog.text and "I can't help." in caplog.text


def test_content_parts_name_the_record_and_what_came(tmp_path):
    inputs = tmp_path / "in.jsonl"
    write_inputs(inputs, 2)
    once = RetryPolicy(max_retries=1, initial_delay=0.01, max_delay=0.02)
    common = {"model": "m", "task": "arithmetic", "concurrency": 1, "retry_policy": once, "progress": False}
    # content parts are a format this client does not read: no retry, and the record is named
    with FaultServer({1: "content-parts"}) as server:
        with pytest.raises(TeacherRequestError, match=r"^record 0 \(sample 0\): .*choices\[0\]\.message\.content "
                           r"is a list; expected a string") as error:  # fmt: skip
            generate_rationales(inputs, tmp_path / "b.jsonl", base_url=server.url, **common)
        assert server.requests == 1 and error.value.summary.retries == 0


def test_a_reply_whose_json_is_cut_short_is_retried_and_names_its_record(tmp_path):
    """A 200 whose JSON body ended early stopped the run at once with "JSONDecodeError: Expecting value ...",
    naming neither the record nor the server, though asking again mends it."""
    inputs = tmp_path / "in.jsonl"
    write_inputs(inputs, 3)
    once = RetryPolicy(max_retries=1, initial_delay=0.01, max_delay=0.02)
    common = {"model": "m", "task": "arithmetic", "concurrency": 1, "retry_policy": once, "progress": False}
    with FaultServer({2: "cut-json"}) as server:
        summary = generate_rationales(inputs, tmp_path / "a.jsonl", base_url=server.url, **common)
        assert server.requests == 4
    assert summary.complete and summary.retries == 1 and len(lines(tmp_path / "a.jsonl")) == 3
    with FaultServer({2: "cut-json", 3: "cut-json"}) as server:
        with pytest.raises(TeacherRequestError) as error:
            generate_rationales(inputs, tmp_path / "b.jsonl", base_url=server.url, **common)
        assert server.requests == 3
    message = str(error.value)
    assert re.search(r"^record 1 \(sample 0\): .*127\.0\.0\.1.* not valid JSON .*gave up after 1 retries",
                     message), message  # fmt: skip
    assert error.value.summary.written == 1 and len(lines(tmp_path / "b.jsonl")) == 1


@pytest.mark.parametrize("api", ["chat", "completions"])
def test_a_text_cut_off_at_max_new_tokens_keeps_only_an_answer_the_cut_spared(tmp_path, api):
    """``finish_reason: "length"`` was ignored: 'So the answer is 1', cut from '... is 14.', was written as the
    teacher's answer '1'; and a record cut before its answer was refused without saying it was cut."""
    inputs = tmp_path / "in.jsonl"
    rows = [{"input": f"What is {a} plus 3?", "label": str(a + 3)} for a in (11, 12, 13, 14)]
    inputs.write_text("".join(json.dumps(row) + "\n" for row in rows))
    out = tmp_path / "out.jsonl"
    faults = {1: "cut-in-answer", 2: "cut-after-answer", 3: "cut-in-reasoning"}
    with FaultServer(faults) as server:
        summary = generate_rationales(
            inputs, out, base_url=server.url, model="m", api=api, task="generic", concurrency=1, progress=False
        )  # fmt: skip
    written = {line["source_index"]: line for line in lines(out)}
    rejects = {line["source_index"]: line for line in lines(tmp_path / "out.rejects.jsonl")}
    assert sorted(written) == [1] and sorted(rejects) == [0, 2, 3]
    # the cut came after the answer's line: the answer stands (and agrees with the gold label)
    assert written[1]["teacher_label"] == "15" and written[1]["rationale"] == "We add 12 and 3."
    assert rejects[0]["teacher_outputs"] == ["We add 11 and 3. So the answer is 1"]
    assert rejects[0]["teacher_parse_errors"] == [
        "the text was cut off at max_new_tokens in the line of its answer sentence; raise max_new_tokens"
    ]
    assert rejects[2]["teacher_parse_errors"][0].endswith(
        "; the text was cut off at max_new_tokens; raise max_new_tokens"
    )
    assert rejects[2]["teacher_parse_errors"][0].startswith("no answer sentence")
    assert rejects[3]["teacher_parse_errors"] == ["no answer sentence ('So the answer is ...')"]  # not cut
    assert summary.counts() == {
        "total": 4, "parsed": 1, "unparsable": 3, "agreed": 1, "dropped": 0, "written": 1, "retries": 0,
    }  # fmt: skip


# (task, choices, a text cut at max_new_tokens, a continuation the uncut text could have had)
_CUT_RUNNING_ON = [
    # the cut line's answer sentence agrees with the earlier one only as a prefix: '... is 125.' uncut
    ("generic", None, "He has 12 apples. So the answer is 12.\nSo the answer is 12", "5."),
    ("generic", None, "He has 12 apples. So the answer is 12.\nThat is", ", so the answer is 13."),
    ("generic", None, "He has 12 apples. So the answer is 12.\n", "So the answer is 13."),
    ("arithmetic", None, "Add 3 and 4. The answer is (3 + 4).\nThe answer is (3 + 4)", " + 1."),
    ("nli", None, "A dog runs. So the answer is neutral.\nSo the answer is neutral", " or contradiction."),
    (
        "multiple_choice",
        ["oven", "refrigerator"],
        "It keeps food cool. So the answer is (b) refrigerator.\nWait",
        ", so the answer is (a) oven.",
    ),
]
# (task, choices, a text cut in an invented next example, its answer)
_CUT_AFTER_READING = [
    ("generic", None, "He has 12 apples. So the answer is 12.\n\nQ: How many pe", "12"),
    ("arithmetic", None, "Add 3 and 4. The answer is (3 + 4).\n\nQ: What is 2 pl", "(3 + 4)"),
    ("nli", None, "A dog runs. So the answer is neutral.\n\nPremise: A cat sle", "neutral"),
    (
        "multiple_choice",
        ["oven", "refrigerator"],
        "It keeps food cool. So the answer is (b) refrigerator.\n\nQ: Wh",
        "refrigerator",
    ),
]


@pytest.mark.parametrize(("task", "choices", "text", "rest"), _CUT_RUNNING_ON)
def test_a_cut_text_still_read_for_answers_at_the_cut_keeps_no_answer(task, choices, text, rest):
    """A cut text whose last line agreed with its answer only as a prefix (``So the answer is 12`` after a line
    saying 12) was kept with that answer, although the uncut text (``... is 125.``) is refused as two answers.
    Where the text is still read for answers at the cut, the rest could always give another: no answer."""
    from hf_cotmi.teacher.answers import parse_teacher_output
    from hf_cotmi.teacher.backends import CutOffText
    from hf_cotmi.teacher.generate import _parse_sample

    before_the_cut = parse_teacher_output(task, text[: text.rfind("\n") + 1], choices=choices)
    assert before_the_cut.label  # the lines before the cut give an answer...
    uncut = parse_teacher_output(task, text + rest, choices=choices)
    assert uncut.label != before_the_cut.label  # ...that a possible uncut text refuses or changes
    # the text as cut gives that answer too, as the old rule required of a cut text
    assert parse_teacher_output(task, text, choices=choices).label == before_the_cut.label
    answer = _parse_sample(task, CutOffText(text), choices)
    assert (answer.label, answer.rationale) == ("", "")
    assert answer.reason.startswith("the text was cut off at max_new_tokens")
    assert answer.reason.endswith("; raise max_new_tokens")
    assert _parse_sample(task, text, choices) == parse_teacher_output(task, text, choices=choices)  # not cut


@pytest.mark.parametrize(("task", "choices", "text", "label"), _CUT_AFTER_READING)
def test_a_cut_text_keeps_an_answer_that_nothing_after_the_cut_could_change(task, choices, text, label):
    """A cut in an invented next example (``Q:``, ``Premise:``), where no answer is read any more, spares the
    answer before it: whatever the rest, the text gives that answer."""
    from hf_cotmi.teacher.answers import parse_teacher_output
    from hf_cotmi.teacher.backends import CutOffText
    from hf_cotmi.teacher.generate import _parse_sample

    answer = _parse_sample(task, CutOffText(text), choices)
    assert answer.label == label and answer.reason == ""
    for rest in ("5.", "\nSo the answer is 13.", "\nThe answer is (9 + 9).", "\nSo the answer is (a) oven."):
        assert parse_teacher_output(task, text + rest, choices=choices).label == label, rest


def test_a_reply_that_is_not_utf8_or_holds_an_error_is_retried_and_names_its_record(tmp_path):
    """A body with a byte that is not UTF-8 stopped the run at once with "UnicodeDecodeError: 'utf-8' codec
    can't decode byte 0xff in position 98", naming neither the record nor the server; a gateway's error in a
    200 reply was shown as "no choices" only, its message lost."""
    inputs = tmp_path / "in.jsonl"
    write_inputs(inputs, 3)
    with FaultServer({1: "not-utf8", 2: "error-body"}) as server:
        summary = generate_rationales(
            inputs, tmp_path / "out.jsonl", base_url=server.url, model="m", task="arithmetic", concurrency=1,
            progress=False, retry_policy=FAST_RETRIES,
        )  # fmt: skip
    assert summary.complete and summary.written == 3 and summary.retries == 2
    once = RetryPolicy(max_retries=1, initial_delay=0.01, max_delay=0.02)
    for fault, said in [
        ("not-utf8", r"not UTF-8 \(byte b'\\xff' at position \d+\): b'.*We add \\xff"),
        ("error-body", r"no choices, but an error: .*upstream model overloaded"),
    ]:
        with FaultServer({1: fault, 2: fault}) as server:
            with pytest.raises(TeacherRequestError, match=rf"record 0 \(sample 0\): {server.url}.* {said}"):
                generate_rationales(
                    inputs, tmp_path / f"{fault}.jsonl", base_url=server.url, model="m", concurrency=1,
                    progress=False, retry_policy=once,
                )  # fmt: skip


def test_max_retry_after_caps_a_day_long_retry_after_from_the_api_and_the_command(tmp_path, capsys):
    """A server or proxy saying Retry-After: 86400 made the run sleep a day."""
    inputs = tmp_path / "in.jsonl"
    write_inputs(inputs, 1)
    with FaultServer({1: "429-day"}) as server:
        started = time.monotonic()
        summary = generate_rationales(
            inputs, tmp_path / "a.jsonl", base_url=server.url, model="m", task="arithmetic", max_retries=1,
            max_retry_after=0.05, progress=False,
        )  # fmt: skip
        assert summary.complete and summary.retries == 1 and time.monotonic() - started < 10
    with FaultServer({1: "429-day"}) as server:
        started = time.monotonic()
        code = generate_rationales_command(
            ["--input-file", str(inputs), "--output-file", str(tmp_path / "b.jsonl"), "--base-url", server.url,
             "--model", "m", "--task", "arithmetic", "--max-retries", "1", "--max-retry-after", "0.05",
             "--no-progress"]
        )  # fmt: skip
        assert code == 0 and time.monotonic() - started < 10 and server.requests == 2
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["retries"] == 1


@pytest.mark.parametrize("fault", ["drip-headers", "drip-body"])
def test_request_timeout_limits_the_whole_request_not_the_wait_for_each_byte(tmp_path, fault):
    """A server sending a byte every 0.5 s with a 1 s --request-timeout took 6 s and was accepted: the client's
    timeout limits each wait for a byte. A reply that drips for 4 s must time out at 0.5 s, and be retried."""
    inputs, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    write_inputs(inputs, 2)
    common = {"model": "m", "task": "arithmetic", "concurrency": 1, "request_timeout": 0.5, "progress": False}
    with FaultServer({1: fault}, drip=0.1, drip_bytes=40) as server:  # 4 s for the first request's reply
        started = time.monotonic()
        summary = generate_rationales(inputs, out, base_url=server.url, retry_policy=FAST_RETRIES, **common)
        elapsed = time.monotonic() - started
        assert server.requests == 3 and server.log[0][2] == server.log[1][2]  # record 0 was asked again
    assert summary.complete and summary.written == 2 and summary.retries == 1
    assert elapsed < 3.0, elapsed  # the dripping reply was not waited for (nor is it afterwards)
    assert lines(out)[0]["rationale"] == "We add 1 and 3. 1 + 3 is 4."
    with FaultServer({1: fault}, drip=0.1, drip_bytes=40) as server:
        with pytest.raises(
            TeacherRequestError,
            match=r"record 0 \(sample 0\): request to http://127\.0\.0\.1:\d+/v1 timed out: no whole reply "
            r"within 0\.5 s \(request_timeout\); gave up after 0 retries",
        ):
            generate_rationales(inputs, tmp_path / "once.jsonl", base_url=server.url, max_retries=0, **common)


@pytest.mark.parametrize(
    "request_timeout", [float("inf"), threading.TIMEOUT_MAX + 1, 1e10], ids=["inf", "above-max", "1e10"]
)
def test_an_infinite_request_timeout_waits_for_a_slow_reply(tmp_path, request_timeout):
    """``request_timeout=math.inf`` (no limit) failed every request with 'OverflowError: timestamp out of range',
    and so did a finite one above ``threading.TIMEOUT_MAX`` (longer than any wait takes): both are no limit."""
    inputs = tmp_path / "in.jsonl"
    write_inputs(inputs, 1)
    with FaultServer({1: "drip-body"}, drip=0.05, drip_bytes=10) as server:
        summary = generate_rationales(
            inputs, tmp_path / "out.jsonl", base_url=server.url, model="m", task="arithmetic",
            request_timeout=request_timeout, max_retries=0, progress=False,
        )  # fmt: skip
    assert summary.complete and summary.written == 1 and summary.retries == 0


def test_a_retry_wait_longer_than_any_wait_takes_still_ends_when_cancelled():
    """A server's ``Retry-After`` above ``threading.TIMEOUT_MAX`` s, honoured in full with
    ``max_retry_after=inf``, made the retry's wait fail with OverflowError instead of waiting (until
    cancelled, as Ctrl-C or a write error does)."""
    backend = OpenAICompatibleBackend("http://127.0.0.1:9/v1", "m")
    threading.Timer(0.2, backend.cancel).start()
    started = time.monotonic()
    with pytest.raises(TeacherRequestError, match="cancelled while waiting to retry"):
        backend._wait_unless_cancelled(threading.TIMEOUT_MAX * 2)
    assert time.monotonic() - started < 10


def _recorded_replies(out: Path) -> dict | None:
    return json.loads(out.with_name(out.name + ".settings.json").read_text()).get("server_replies")


def test_a_rerun_against_a_server_running_another_model_is_refused_and_the_output_kept(tmp_path, capsys):
    """A rerun into the same output against another server under the same --model name appended that
    server's answers: records 0-1 from one teacher, 2-3 from another, without a word."""
    inputs, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    write_inputs(inputs, 4)
    common = {"model": "fake-teacher", "task": "arithmetic", "concurrency": 1, "progress": False}
    with FaultServer() as first:
        generate_rationales(inputs, out, base_url=first.url, max_records=2, **common)
    assert _recorded_replies(out) == {"model": "fake-teacher", "base_url": first.url}
    before, settings_before = out.read_bytes(), out.with_name("out.jsonl.settings.json").read_bytes()
    with FaultServer(reply_model="another-model") as second:
        with pytest.raises(SettingsMismatchError) as caught:
            generate_rationales(inputs, out, base_url=second.url, **common)
        assert second.requests == 1  # refused at the first reply
        message = str(caught.value)
        assert message.startswith(f"{out}: the server at {second.url} replies as model 'another-model', but ")
        assert (
            f"replies naming model 'fake-teacher' (recorded in {out}.settings.json, from {first.url})"
            in message
        )
        assert "another output file" in message and "--force" in message
        assert (
            out.read_bytes() == before
            and out.with_name("out.jsonl.settings.json").read_bytes() == settings_before
        )
        assert caught.value.summary.written == 2 and not (tmp_path / "out.rejects.jsonl").read_text()
        # the command: one line on stderr, exit 1, the counts, and no advice to rerun
        argv = ["generate-rationales", "--input-file", str(inputs), "--output-file", str(out), "--base-url",
                second.url, "--model", "fake-teacher", "--task", "arithmetic", "--no-progress"]  # fmt: skip
        assert main(argv) == 1
        printed = capsys.readouterr()
        assert printed.out.splitlines()[-2] == "stopped: 2 of 4 records done"
        assert len(printed.err.splitlines()) == 1 and "replies as model 'another-model'" in printed.err
        assert out.read_bytes() == before
        # --force appends anyway, and records the model the output is now made from
        summary = generate_rationales(inputs, out, base_url=second.url, force=True, **common)
    assert summary.complete and summary.resumed == 2
    assert _recorded_replies(out) == {"model": "another-model", "base_url": second.url}
    assert out.read_bytes().startswith(before)


def test_after_a_forced_mix_the_refusal_says_which_records_the_recorded_model_made(tmp_path):
    """After --force appended model B's replies to two records of model A's, a rerun against A was told
    "the records in out.jsonl come from replies naming model 'B'", though two of the three came from A."""
    inputs, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    write_inputs(inputs, 4)
    common = {"model": "tgi", "task": "arithmetic", "concurrency": 1, "progress": False}
    with FaultServer(reply_model="A") as first:
        generate_rationales(inputs, out, base_url=first.url, max_records=2, **common)
    with FaultServer(reply_model="B") as forced:
        generate_rationales(inputs, out, base_url=forced.url, max_records=3, force=True, **common)
    assert _recorded_replies(out) == {"model": "B", "base_url": forced.url}
    assert len(lines(out)) == 3
    with FaultServer(reply_model="A") as again:
        with pytest.raises(SettingsMismatchError) as caught:
            generate_rationales(inputs, out, base_url=again.url, **common)
    said = str(caught.value)
    assert said.startswith(
        f"{out}: the server at {again.url} replies as model 'A', but the latest records in {out} come from "
        f"replies naming model 'B' (recorded in {out}.settings.json, from {forced.url}): "
    ), said


def test_a_reply_naming_another_model_mid_run_stops_the_run_and_is_not_written(tmp_path):
    inputs, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    write_inputs(inputs, 4)
    with FaultServer({3: "other-model"}) as server:
        with pytest.raises(
            SettingsMismatchError, match=r"replies as model 'another-model', but .* model 'm'"
        ):
            generate_rationales(
                inputs, out, base_url=server.url, model="m", task="arithmetic", concurrency=1, progress=False
            )
        assert server.requests == 3  # not retried
    assert [line["source_index"] for line in lines(out)] == [0, 1]  # the third reply was not written


def test_an_output_whose_settings_predate_the_recorded_reply_model_records_it_without_refusing(tmp_path):
    inputs, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    write_inputs(inputs, 4)
    common = {"model": "m", "task": "arithmetic", "concurrency": 1, "progress": False}
    with FaultServer() as server:
        generate_rationales(inputs, out, base_url=server.url, max_records=2, **common)
    settings_file = out.with_name("out.jsonl.settings.json")
    older = json.loads(settings_file.read_text())
    del older["server_replies"]  # as a settings file written before the reply model was recorded
    settings_file.write_text(json.dumps(older, indent=2, sort_keys=True) + "\n")
    with FaultServer(reply_model="served-name") as server:
        summary = generate_rationales(inputs, out, base_url=server.url, **common)
    assert summary.complete and summary.resumed == 2
    assert _recorded_replies(out) == {"model": "served-name", "base_url": server.url}
    assert json.loads(settings_file.read_text()) == {**older, "server_replies": _recorded_replies(out)}
    # what a reply said is no setting: every line keeps the same settings hash
    assert len({line["teacher_settings_id"] for line in lines(out)}) == 1 and len(lines(out)) == 4


def test_the_recorded_base_url_keeps_no_credentials_and_follows_the_server(tmp_path):
    inputs, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    write_inputs(inputs, 2)
    common = {"model": "m", "task": "arithmetic", "concurrency": 1, "progress": False}
    with FaultServer() as server:
        port = server.url.split(":")[2].split("/")[0]
        generate_rationales(inputs, out, base_url=f"http://user:{SECRET}@127.0.0.1:{port}/v1",
                            max_records=1, **common)  # fmt: skip
        assert _recorded_replies(out) == {"model": "m", "base_url": server.url}
    with FaultServer() as restarted:  # the same teacher on another port: no refusal, the URL follows it
        assert generate_rationales(inputs, out, base_url=restarted.url, **common).complete
    assert _recorded_replies(out) == {"model": "m", "base_url": restarted.url}
    assert SECRET not in out.with_name("out.jsonl.settings.json").read_text()


def _cli(*argv: str) -> list[str]:
    return [sys.executable, "-m", "hf_cotmi.cli", "generate-rationales", *argv]


@pytest.mark.slow
def test_sigkill_mid_run_then_rerun_gives_the_same_files(tmp_path):
    inputs = tmp_path / "in.jsonl"
    write_inputs(inputs, 30)
    common = [
        "--input-file",
        str(inputs),
        "--task",
        "arithmetic",
        "--concurrency",
        "2",
        "--no-progress",
        "true",
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    with FaultServer({3: "500", 12: "429"}, delay=0.1) as server:
        reference = tmp_path / "reference.jsonl"
        code = generate_rationales_command([*common, "--output-file", str(reference), "--base-url", server.url,
                                            "--model", "m"])  # fmt: skip
        assert code == 0
        killed = tmp_path / "killed.jsonl"
        argv = _cli(*common, "--output-file", str(killed), "--base-url", server.url, "--model", "m")
        process = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 60
        while len(lines(killed)) < 4 and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.01)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
        partial = len(lines(killed)) + len(lines(tmp_path / "killed.rejects.jsonl"))
        assert 4 <= partial < 30, partial
        result = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert list(summary) == SUMMARY_KEYS and summary["total"] == 30 and summary["written"] == 26
    for suffix in (".jsonl", ".rejects.jsonl", ".jsonl.settings.json"):
        assert (tmp_path / f"killed{suffix}").read_bytes() == (
            tmp_path / f"reference{suffix}"
        ).read_bytes(), suffix


@pytest.mark.slow
def test_ctrl_c_keeps_what_finished_and_exits_without_waiting_for_the_requests_in_flight(tmp_path):
    """After Ctrl-C the command said "interrupted", then the process waited for the requests in flight (up
    to --request-timeout, 120 s by default) whose answers nobody would write; a second Ctrl-C printed a
    traceback from the interpreter's exit."""
    inputs = tmp_path / "in.jsonl"
    write_inputs(inputs, 12)
    out = tmp_path / "out.jsonl"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    with FaultServer({5: "slow", 6: "slow", 7: "slow"}, slow=60.0) as server:
        argv = _cli("--input-file", str(inputs), "--output-file", str(out), "--base-url", server.url, "--model",
                    "m", "--task", "arithmetic", "--concurrency", "3", "--no-progress", "true")  # fmt: skip
        process = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 60
        while server.requests < 7 and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.02)
        # the three slow requests are in flight; wait until the four before them are written (under load
        # their writing can trail the requests)
        while time.monotonic() < deadline and (not out.exists() or out.read_text().count("\n") < 4):
            time.sleep(0.02)
        time.sleep(0.1)
        interrupted = time.monotonic()
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=90)
        assert time.monotonic() - interrupted < 15, "waited for the requests in flight"
        assert process.returncode == 130 and "interrupted" in stderr and "Traceback" not in stderr, stderr
        assert "stopped: 4 of 12 records done" in stdout
        kept = [line["source_index"] for line in lines(out)]  # what finished is kept: the four fast requests'
        assert (
            len(kept) == len(set(kept)) == 4
        )  # records (which ones depends on how the threads were scheduled)
        result = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    done = lines(out) + lines(tmp_path / "out.rejects.jsonl")
    assert sorted(line["source_index"] for line in done) == list(range(12))


@pytest.fixture(scope="module")
def tiny_student(tmp_path_factory) -> str:
    folder = tmp_path_factory.mktemp("student")
    tokenizer = build_word_tokenizer(
        ["what is plus we add and the answer is ( ) + 0 1 2 3 4 5 6 7 8 9 10 11 12 ."]
    )
    build_tiny_seq2seq(tokenizer, "t5", d_model=16, num_layers=1, num_heads=2, d_ff=32).save_pretrained(
        folder
    )
    tokenizer.save_pretrained(folder)
    return str(folder)


def test_the_output_trains_a_student_with_hf_cotmi_train(tmp_path, tiny_student, capsys):
    inputs = tmp_path / "in.jsonl"
    write_inputs(inputs, 12)
    out = tmp_path / "train.jsonl"
    with FaultServer() as server:
        code = main(["generate-rationales", "--input-file", str(inputs), "--output-file", str(out),
                     "--base-url", server.url, "--model", "m", "--task", "arithmetic", "--no-progress"])  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().out.strip().splitlines()
    assert json.loads(printed[-1]) == {
        "total": 12, "parsed": 11, "unparsable": 1, "agreed": 9, "dropped": 0, "written": 11, "retries": 0,
    }  # fmt: skip
    fast = ["--max-steps", "2", "--per-device-train-batch-size", "4", "--save-strategy", "no", "--use-cpu",
            "--disable-tqdm", "true", "--report-to", "none", "--generation-max-length", "6",
            "--rationale-max-new-tokens", "4", "--num-examples-to-show", "1"]  # fmt: skip
    code = main(["train", "--model", tiny_student, "--train-file", str(out), "--test-file", str(out),
                 "--task", "equation", *fast, "--output-dir", str(tmp_path / "student")])  # fmt: skip
    assert code == 0
    assert (tmp_path / "student" / "model.safetensors").is_file()


def test_cli_usage_errors_are_one_line(tmp_path, capsys):
    code = main(["generate-rationales", "--input-file", "x.jsonl", "--output-file", "y.jsonl"])
    assert code == 2 and "give one teacher" in capsys.readouterr().err
    code = main(
        [
            "generate-rationales",
            "--input-file",
            "x",
            "--output-file",
            "y.jsonl",
            "--base-url",
            "http://127.0.0.1:1/v1",
        ]
    )
    assert code == 2 and "--base-url needs --model" in capsys.readouterr().err


def test_the_summary_line_says_what_this_run_wrote_and_what_the_files_hold(tmp_path, capsys):
    """A rerun of a finished run printed '3 records written to gen.jsonl, 3 to gen.rejects.jsonl; 6 were
    already done': the file totals read as this run's work, though it wrote nothing."""
    inputs, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    rejects = tmp_path / "out.rejects.jsonl"
    write_inputs(inputs, 10)
    common = ["--input-file", str(inputs), "--output-file", str(out), "--model", "m", "--task", "arithmetic",
              "--filter", "drop", "--no-progress"]  # fmt: skip
    with FaultServer() as server:
        printed = []
        for extra in (["--max-records", "6"], [], []):
            assert generate_rationales_command([*common, "--base-url", server.url, *extra]) == 0
            printed.append(capsys.readouterr().out.splitlines()[-2])
            printed.append((len(lines(out)), len(lines(rejects))))
        assert server.requests == 10  # the third run asked nothing
    # record 5 disagrees with its label and record 7 is unparsable (canned_answer): both in the rejects file
    assert printed[1] == (5, 1) and printed[3] == printed[5] == (7, 3)
    said = f"({out} now holds {{}}, {rejects} {{}})"
    assert printed[0].startswith("this run wrote 6 records " + said.format(5, 1) + "; mean self-consistency")
    assert printed[2].startswith(
        "this run wrote 4 records " + said.format(7, 3) + "; 6 were done by an earlier run; mean"
    )
    assert printed[4].startswith(
        "this run wrote 0 records " + said.format(7, 3) + "; 10 were done by an earlier run; mean"
    )


class _NoTeacherToBuild:
    """Stands for a backend class: building a teacher (loading a local model) is recorded and refused."""

    def __init__(self) -> None:
        self.built: list[tuple] = []

    def __call__(self, *args, **kwargs):
        self.built.append(args)
        raise AssertionError("the teacher was built before the output file was checked")


@pytest.mark.parametrize("kind", ["local", "server"])
def test_an_output_the_generator_did_not_write_is_refused_before_the_teacher_is_built(
    tmp_path, monkeypatch, capsys, kind
):
    """With a train.jsonl it had not written, the command loaded the teacher's weights (minutes for a big
    one), then stopped: 'train.jsonl, line 1: expected ... source_index'."""
    from hf_cotmi.teacher import generate

    factory = _NoTeacherToBuild()
    monkeypatch.setattr(
        generate, "LocalCausalBackend" if kind == "local" else "OpenAICompatibleBackend", factory
    )
    inputs, out = tmp_path / "in.jsonl", tmp_path / "train.jsonl"
    write_inputs(inputs, 2)
    out.write_text('{"input": "What is 1 plus 3?", "label": "4", "rationale": "1 + 3 = 4."}\n')
    teacher = ["--teacher-model", "no-such-teacher"] if kind == "local" else [
        "--base-url", "http://127.0.0.1:1/v1", "--model", "m"]  # fmt: skip
    code = main(["generate-rationales", "--input-file", str(inputs), "--output-file", str(out), *teacher])
    assert code == 1 and factory.built == []
    assert re.search(r"DataFormatError: .*train\.jsonl, line 1: expected a JSON object with an integer "
                     r"'source_index'", capsys.readouterr().err)  # fmt: skip


# ------------------------------------------------------------------------------- real transformers serve


@pytest.fixture(scope="module")
def served_teacher(tmp_path_factory):
    """A tiny Llama saved to a folder and served by a real `transformers serve` on 127.0.0.1."""
    folder = save_tiny_causal_teacher(
        tmp_path_factory.mktemp("teacher") / "tiny-llama", extra_words="what plus"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    log = tmp_path_factory.mktemp("serve-log") / "serve.log"
    try:
        with served_by_transformers(folder, log_path=log, timeout_s=90, env=env) as url:
            yield folder, url
    except RuntimeError as error:
        pytest.fail(str(error))


def _texts(output: Path) -> dict[int, list[str]]:
    """source_index -> the teacher's raw texts, from the output and rejects files."""
    texts = {}
    for line in lines(output) + lines(output.with_name(output.stem + ".rejects.jsonl")):
        texts[line["source_index"]] = (
            line.get("teacher_outputs") or line.get("teacher_unparsable_outputs") or []
        )
    return texts


@pytest.mark.slow
@pytest.mark.parametrize("api", ["chat", "completions"])
def test_real_transformers_serve_and_the_local_backend_agree(served_teacher, tmp_path, api):
    folder, url = served_teacher
    inputs = tmp_path / "in.jsonl"
    write_inputs(inputs, 5)
    served, local = tmp_path / "served.jsonl", tmp_path / "local.jsonl"
    options = dict(task="arithmetic", api=api, max_new_tokens=8, progress=False)
    summary = generate_rationales(inputs, served, base_url=url, model=folder, concurrency=2, **options)
    assert summary.total == 5 and summary.parsed + summary.unparsable == 5 and summary.retries == 0
    local_summary = generate_rationales(
        inputs, local, teacher_model=folder, batch_size=3, device="cpu", **options
    )
    assert local_summary.counts() == summary.counts()
    served_texts, local_texts = _texts(served), _texts(local)
    assert sorted(served_texts) == list(range(5))
    assert all(
        texts and texts[0].strip() for texts in served_texts.values()
    )  # the tiny model wrote something
    assert served_texts == local_texts  # greedy: the same text over HTTP and from a left-padded local batch


def test_a_local_teacher_records_no_reply_model_and_resumes(tmp_path):
    folder = save_tiny_causal_teacher(tmp_path / "m")
    inputs, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    write_inputs(inputs, 3)
    common = {"teacher_model": folder, "max_new_tokens": 4, "device": "cpu", "progress": False}
    generate_rationales(inputs, out, max_records=2, **common)
    settings = json.loads(out.with_name("out.jsonl.settings.json").read_text())
    assert settings["backend"] == "local" and "server_replies" not in settings
    summary = generate_rationales(inputs, out, **common)
    assert summary.complete and summary.resumed == 2
    assert json.loads(out.with_name("out.jsonl.settings.json").read_text()) == settings


def test_other_settings_or_inputs_are_refused_before_the_local_teacher_loads(tmp_path, monkeypatch):
    """Settings known before the teacher loads (its name, length, sampling, task, prompt, filter, samples,
    seed) and the done lines' match with the inputs are checked first; a rerun with the same settings, or
    with --force, goes on to load the teacher."""
    from hf_cotmi.teacher import generate
    from hf_cotmi.teacher.store import OutputInUseError, exclusive_output

    folder = save_tiny_causal_teacher(tmp_path / "m")
    inputs, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    rows = write_inputs(inputs, 3)
    common = {"teacher_model": folder, "device": "cpu", "progress": False}
    generate_rationales(inputs, out, max_records=2, max_new_tokens=4, **common)
    stored = out.with_name("out.jsonl.settings.json").read_bytes()
    factory = _NoTeacherToBuild()
    monkeypatch.setattr(generate, "LocalCausalBackend", factory)
    for changed, said in [
        ({"max_new_tokens": 8}, "max_new_tokens: 4 -> 8"),
        ({"max_new_tokens": 4, "temperature": 0.5}, "seed: None -> 0, temperature: 0.0 -> 0.5"),
        ({"max_new_tokens": 4, "task": "arithmetic"}, "task: 'generic' -> 'arithmetic'"),
        ({"max_new_tokens": 4, "filter": "drop"}, "filter: 'keep' -> 'drop'"),
    ]:
        with pytest.raises(SettingsMismatchError, match=re.escape(said)):
            generate_rationales(inputs, out, **{**common, **changed})
    with exclusive_output(out), pytest.raises(OutputInUseError):
        generate_rationales(inputs, out, max_new_tokens=4, **common)
    edited = tmp_path / "edited.jsonl"
    edited.write_text("".join(json.dumps({**row, "label": "0"}) + "\n" for row in rows))
    with pytest.raises(
        ValueError, match=r"source_index 0 has label '4', but the input's record 0 has label '0'"
    ):
        generate_rationales(edited, out, max_new_tokens=4, **common)
    out.with_name("out.jsonl.settings.json").write_text("[1]")
    with pytest.raises(
        DataFormatError, match=r"out\.jsonl\.settings\.json: expected a JSON object of settings"
    ):
        generate_rationales(inputs, out, max_new_tokens=4, **common)
    out.with_name("out.jsonl.settings.json").write_bytes(stored)
    assert factory.built == []
    for options in ({"max_new_tokens": 4}, {"max_new_tokens": 8, "force": True}):  # on to build the teacher
        with pytest.raises(AssertionError, match="the teacher was built"):
            generate_rationales(inputs, out, **options, **common)
    assert [args[0] for args in factory.built] == [folder, folder]
    monkeypatch.undo()
    summary = generate_rationales(inputs, out, max_new_tokens=4, **common)
    assert summary.complete and summary.resumed == 2 and summary.new_records == 1


def test_local_backend_left_pads_and_batches(tmp_path):
    folder = save_tiny_causal_teacher(tmp_path / "m")
    backend = LocalCausalBackend(folder, max_new_tokens=5, batch_size=4, device="cpu")
    assert backend.tokenizer.padding_side == "left" and backend.use_chat_template
    from hf_cotmi.teacher import GenerationRequest

    prompts = ["Q: how many apples ?\nA:", "Q: what is 1 + 2 + 3 + 4 + 5 and 6 ?\nA:"]
    batched = backend.generate([GenerationRequest(i, 0, p, None) for i, p in enumerate(prompts)])
    alone = [backend.generate([GenerationRequest(0, 0, p, None)])[0] for p in prompts]
    assert batched == alone  # left padding: a short prompt in a batch continues as it does alone
    # sampling: a request's text follows from its own seed, whatever batch it falls in (a resumed run
    # starts its batches elsewhere)
    sampler = LocalCausalBackend(
        folder, max_new_tokens=5, batch_size=4, device="cpu", temperature=1.0, model=backend.model
    )
    requests = [GenerationRequest(i, 0, p, 100 + i) for i, p in enumerate(prompts * 2)]
    together = sampler.generate(requests)
    assert (
        together[2:] == sampler.generate(requests[2:]) and together[1] == sampler.generate(requests[1:2])[0]
    )
    assert together[0] != together[2]  # same prompt, other seed: other text (the check can fail)


@pytest.mark.slow
def test_throughput_benchmark_smoke(served_teacher, tmp_path):
    import importlib.util

    folder, url = served_teacher
    path = ROOT / "examples" / "benchmarks" / "teacher_throughput.py"
    spec = importlib.util.spec_from_file_location("teacher_throughput", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    output = tmp_path / "teacher_throughput.json"
    result = module.main(
        [
            "--smoke",
            "--teacher",
            folder,
            "--base-url",
            url,
            "--work-dir",
            str(tmp_path),
            "--output",
            str(output),
        ]
    )
    for name in ("serve", "serve_sequential", "local", "local_unbatched"):
        assert result[f"{name}_examples_per_s"] > 0
    stored = json.loads(output.read_text())
    assert stored["result"] == result
    for name, seconds in stored["details"]["seconds"].items():  # the rates are the examples over these
        assert result[f"{name}_examples_per_s"] == pytest.approx(8 / seconds, rel=0.01)
    assert len(lines(tmp_path / "local.rejects.jsonl")) + len(lines(tmp_path / "local.jsonl")) == 8


@pytest.mark.slow
def test_a_server_that_cannot_start_is_a_clear_error_with_its_log(tmp_path):
    """A folder without a model: `transformers serve` exits, and the error says so and quotes its log."""
    empty = tmp_path / "not-a-model"
    empty.mkdir()
    with pytest.raises(RuntimeError, match=r"did not come up \(exited with") as caught:
        with served_by_transformers(empty, log_path=tmp_path / "serve.log", timeout_s=60):
            pytest.fail("the block must not run")
    log = (tmp_path / "serve.log").read_text()
    assert log.strip() and log[-3000:].strip()[-200:] in str(caught.value)


# A stand-in for `transformers serve` (standard library only): it records its arguments and pid, then, by
# FAKE_SERVE_MODE, answers /health on --host:--port ("ok"), exits as a server whose port was taken
# ("in-use") or that found no model ("exit"), or never answers ("hang").
FAKE_SERVE = """
import json, os, sys, time
from http.server import BaseHTTPRequestHandler, HTTPServer

args = sys.argv[1:]
with open(os.environ["FAKE_SERVE_RECORD"], "w") as record:
    json.dump({"args": args, "pid": os.getpid()}, record)
mode = os.environ["FAKE_SERVE_MODE"]
host, port = args[args.index("--host") + 1], int(args[args.index("--port") + 1])
if mode == "in-use":
    print(f"ERROR: [Errno 98] error while attempting to bind on address ({host!r}, {port}): address already in use")
    sys.exit(3)
if mode == "exit":
    print("OSError: no file named config.json in this folder")
    sys.exit(1)
if mode == "hang":
    time.sleep(600)


class Health(BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args):
        pass


HTTPServer((host, port), Health).serve_forever()
"""


@pytest.fixture
def fake_serve(tmp_path, monkeypatch):
    """Runs served_by_transformers against FAKE_SERVE: ``sys.executable`` is a fake ``python`` (and a fake
    ``transformers`` beside it unless ``beside=False``); returns a function ``mode -> record path``."""

    def install(mode: str, *, beside: bool = True) -> Path:
        folder = tmp_path / "fake-bin"
        folder.mkdir(exist_ok=True)
        for name in ("python", "transformers") if beside else ("python",):
            script = folder / name
            script.write_text(f"#!{sys.executable}\n{FAKE_SERVE}")
            script.chmod(0o755)
        record = tmp_path / "fake-serve.json"
        monkeypatch.setattr(sys, "executable", str(folder / "python"))
        monkeypatch.setenv("FAKE_SERVE_MODE", mode)
        monkeypatch.setenv("FAKE_SERVE_RECORD", str(record))
        return record

    return install


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_the_server_is_the_running_pythons_transformers_on_127_0_0_1(tmp_path, fake_serve):
    """With no `transformers` script beside the interpreter (a `pip install --user`), the server still starts:
    it is the running Python's transformers module, bound to 127.0.0.1, and stopped when the block ends."""
    record = fake_serve("ok", beside=False)
    with served_by_transformers(tmp_path / "teacher", log_path=tmp_path / "serve.log", timeout_s=30) as url:
        args = json.loads(record.read_text())["args"]
        port = args[args.index("--port") + 1]
        assert url == f"http://127.0.0.1:{port}/v1"
        assert args == [
            "-m",
            "transformers.cli.transformers",
            "serve",
            str(tmp_path / "teacher"),
            "--host",
            "127.0.0.1",
            "--port",
            port,
            "--device",
            "cpu",
        ]
    assert _gone(json.loads(record.read_text())["pid"])


def test_the_health_check_does_not_go_through_an_http_proxy(tmp_path, fake_serve, monkeypatch):
    """A proxy in the environment (http_proxy) is for the outside world: 127.0.0.1 is asked directly."""
    from hf_cotmi.teacher.serve import free_local_port

    fake_serve("ok")
    for name in ("no_proxy", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
    nowhere = f"http://127.0.0.1:{free_local_port()}"  # nothing listens there
    for name in ("http_proxy", "HTTP_PROXY"):
        monkeypatch.setenv(name, nowhere)
    with served_by_transformers(tmp_path / "teacher", log_path=tmp_path / "serve.log", timeout_s=10) as url:
        assert url.startswith("http://127.0.0.1:")


@pytest.mark.parametrize(
    ("mode", "state", "advice"),
    [
        ("in-use", r"exited with 3", r"another process took port \d+.*run again"),
        ("exit", r"exited with 1", r"saved causal LM with its tokenizer.*transformers\[serving\]"),
        ("hang", r"silent for 2 s", r"a longer timeout_s"),
    ],
)
def test_a_server_that_does_not_come_up_says_why_and_what_to_do_and_is_stopped(
    tmp_path, fake_serve, mode, state, advice
):
    record = fake_serve(mode)
    log = tmp_path / "serve.log"
    started = time.monotonic()
    with pytest.raises(RuntimeError) as caught:
        with served_by_transformers(tmp_path / "teacher", log_path=log, timeout_s=2):
            pytest.fail("the block must not run")
    assert time.monotonic() - started < 30
    message = str(caught.value)
    assert re.search(rf"did not come up \({state}\)", message), message
    assert re.search(advice, message, re.DOTALL), message
    assert str(log) in message and log.read_text().strip()[-60:] in message
    assert _gone(json.loads(record.read_text())["pid"])


def test_cancel_ends_a_retry_wait_at_once_and_a_new_run_starts_afresh(tmp_path):
    """Ctrl-C cancels the server backend: threads waiting to retry stop instead of going on for minutes."""
    from hf_cotmi.teacher import GenerationRequest, OpenAICompatibleBackend

    with FaultServer({1: "500"}) as server:
        backend = OpenAICompatibleBackend(
            server.url, "m", retry_policy=RetryPolicy(initial_delay=30.0, max_delay=30.0, jitter=0.0)
        )
        outcome: list[BaseException] = []

        def run() -> None:
            try:
                backend.generate([GenerationRequest(0, 0, "Q: What is 1 plus 1?\nA:", None)])
            except BaseException as error:  # noqa: BLE001 - the test reads it
                outcome.append(error)

        worker = threading.Thread(target=run)
        started = time.monotonic()
        worker.start()
        while server.requests < 1:  # the first attempt failed with 500: the backend now waits 30 s
            time.sleep(0.05)
        backend.cancel()
        worker.join(timeout=10)
        assert not worker.is_alive() and time.monotonic() - started < 10
        assert isinstance(outcome[0], TeacherRequestError) and "cancelled" in str(outcome[0])
        assert server.requests == 1  # no further attempt
        inputs, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
        write_inputs(inputs, 2)
        summary = generate_rationales(inputs, out, backend=backend, task="arithmetic", progress=False)
        assert summary.complete  # generate_rationales starts a cancelled backend afresh


def _fail_every_write(monkeypatch) -> None:
    """Every record write fails as on a full disk (the run's first finished record raises)."""
    from hf_cotmi.teacher.store import JsonlAppender

    def full_disk(self, record):
        raise OSError(errno.ENOSPC, f"could not write a record to {self.path}: No space left on device")

    monkeypatch.setattr(JsonlAppender, "write", full_disk)


def _new_teacher_threads(before: set[threading.Thread]) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t not in before and t.name.startswith("teacher")]


def test_a_write_error_cancels_the_retries_in_flight_and_carries_the_summary(tmp_path, monkeypatch):
    """A full disk stopped the run, but the other worker went on retrying (30 s waits here) with no summary."""
    inputs, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    write_inputs(inputs, 2)
    _fail_every_write(monkeypatch)
    before = set(threading.enumerate())
    with FaultServer({n: "500" for n in range(2, 50)}) as server:  # the first answer is written: ENOSPC
        started = time.monotonic()
        with pytest.raises(OSError, match="No space left on device") as caught:
            generate_rationales(
                inputs, out, base_url=server.url, model="m", task="arithmetic", concurrency=2, progress=False,
                retry_policy=RetryPolicy(max_retries=6, initial_delay=30.0, max_delay=30.0, jitter=0.0),
            )  # fmt: skip
        for thread in _new_teacher_threads(before):  # the request failing with 500 waits to retry
            thread.join(timeout=10)
        assert not _new_teacher_threads(before) and time.monotonic() - started < 10
        assert server.requests <= 2  # no retry after the write error
    assert caught.value.errno == errno.ENOSPC
    summary = caught.value.summary
    assert (summary.total, summary.written, summary.parsed, summary.output_file) == (2, 0, 0, str(out))


def test_the_command_prints_the_summary_after_a_write_error(tmp_path, monkeypatch, capsys):
    inputs, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    write_inputs(inputs, 2)
    _fail_every_write(monkeypatch)
    with FaultServer({2: "slow"}, slow=3.0) as server:  # one request still in flight at the write error
        started = time.monotonic()
        with pytest.raises(OSError, match="No space left on device"):
            generate_rationales_command(
                ["--input-file", str(inputs), "--output-file", str(out), "--base-url", server.url,
                 "--model", "m", "--task", "arithmetic", "--concurrency", "2", "--no-progress"]
            )  # fmt: skip
        assert time.monotonic() - started < 2.5  # the slow request was not waited for
    printed = capsys.readouterr().out.splitlines()
    assert printed[-2] == "stopped: 0 of 2 records done; rerun to continue"
    assert json.loads(printed[-1]) == dict.fromkeys(SUMMARY_KEYS, 0) | {"total": 2}


def _bogus_proxy_in_the_environment(monkeypatch, proxy: str) -> None:
    """``http_proxy`` / ``HTTP_PROXY`` set to ``proxy``, no ``NO_PROXY``: as on a machine behind a proxy."""
    for name in ("no_proxy", "NO_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    for name in ("http_proxy", "HTTP_PROXY"):
        monkeypatch.setenv(name, proxy)


def test_a_teacher_on_127_0_0_1_is_asked_directly_not_through_an_http_proxy(monkeypatch):
    """With http_proxy set, requests to a local server went to the proxy and failed ('connection failed')."""
    from hf_cotmi.teacher import GenerationRequest, OpenAICompatibleBackend
    from hf_cotmi.teacher.serve import free_local_port

    _bogus_proxy_in_the_environment(monkeypatch, f"http://127.0.0.1:{free_local_port()}")  # nothing there
    with FaultServer() as server:
        backend = OpenAICompatibleBackend(server.url, "m", retry_policy=RetryPolicy(max_retries=0))
        texts = backend.generate([GenerationRequest(0, 0, "Q: What is 3 plus 4?\nA:", None)])
        assert server.requests == 1
    assert texts[0].startswith("We add 3 and 4. 3 + 4 is 7.")


def test_a_remote_teacher_still_goes_through_the_http_proxy_of_the_environment(monkeypatch):
    """Users behind a corporate proxy need it: the fault server plays the proxy for a remote host."""
    from hf_cotmi.teacher import GenerationRequest, OpenAICompatibleBackend

    with FaultServer() as proxy:
        _bogus_proxy_in_the_environment(monkeypatch, proxy.url.removesuffix("/v1"))
        backend = OpenAICompatibleBackend(
            "http://teacher.invalid/v1", "m", retry_policy=RetryPolicy(max_retries=0)
        )
        texts = backend.generate([GenerationRequest(0, 0, "Q: What is 3 plus 4?\nA:", None)])
        assert proxy.requests == 1  # the request reached the proxy (teacher.invalid resolves nowhere)
    assert texts[0].startswith("We add 3 and 4. 3 + 4 is 7.")


@pytest.mark.parametrize(
    ("base_url", "direct"),
    [
        ("http://localhost:8000/v1", True),
        ("http://[::1]:8000/v1", True),
        ("http://127.0.0.2:8000/v1", True),
        ("http://10.0.0.7:8000/v1", False),
        ("https://localhost.example.com/v1", False),
    ],
)
def test_only_loopback_base_urls_ignore_the_proxy_of_the_environment(base_url, direct):
    from hf_cotmi.teacher import OpenAICompatibleBackend

    http_client = OpenAICompatibleBackend(base_url, "m")._client._client  # the openai client's httpx client
    assert http_client.trust_env is not direct
