"""Teacher backends behind one interface: an OpenAI-compatible server, or a local Hugging Face causal model.

A backend turns :class:`GenerationRequest` objects (one prompt, one sample) into texts. The generator
sends it batches of at most ``batch_size`` requests from at most ``concurrency`` threads at once:

- :class:`OpenAICompatibleBackend` (vLLM, TGI, llama.cpp, ``transformers serve``, hosted APIs): one HTTP
  request per sample through the ``openai`` client (chat completions, or completions for base models),
  ``batch_size`` 1 and ``concurrency`` threads; timeouts (of the whole request), connection errors, 429 and
  5xx are retried with backoff (:mod:`hf_cotmi.teacher.retrying`). The API key is read from an environment
  variable and never logged or written.
- :class:`LocalCausalBackend`: ``AutoModelForCausalLM.generate`` on batches of prompts with left padding,
  on CUDA when there is one.

Examples:
    >>> request = GenerationRequest(index=3, sample=0, prompt="Q: 1 + 1?\\nA:", seed=None)
    >>> request.key
    (3, 0)
"""

from __future__ import annotations

import functools
import ipaddress
import json
import logging
import os
import random
import threading
import urllib.parse
from collections.abc import Callable, Sequence
from concurrent.futures import Future, wait
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from .options import check_positive, check_request_timeout, check_sampling
from .retrying import RetryableError, RetryPolicy, call_with_retries, parse_retry_after

__all__ = [
    "CutOffText",
    "GenerationRequest",
    "TeacherBackend",
    "TeacherRequestError",
    "OpenAICompatibleBackend",
    "LocalCausalBackend",
    "chat_turn_end_token_id",
    "stop_token_ids",
]

logger = logging.getLogger(__name__)

_RETRYABLE_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})
_LONG_WAIT_S = 60.0  # a Retry-After longer than this (the backoff's own cap) is logged as a warning
# server errors that a retry cannot mend: the server does not implement the request, or its HTTP version
_PERMANENT_SERVER_STATUS = frozenset({501, 505})


@dataclass(frozen=True)
class GenerationRequest:
    """One prompt to complete once.

    Attributes:
        index: the record's position in the input.
        sample: which of the record's samples this is (0-based).
        prompt: the filled prompt template.
        seed: the sampling seed sent with the request (None when decoding greedily).

    Examples:
        >>> GenerationRequest(0, 1, "Q: x\\nA:", 7).sample
        1
    """

    index: int
    sample: int
    prompt: str
    seed: int | None

    @property
    def key(self) -> tuple[int, int]:
        """``(index, sample)``."""
        return self.index, self.sample


class CutOffText(str):
    """A teacher's text that generation cut off at ``max_new_tokens`` (a server's ``finish_reason: "length"``,
    a local model that wrote no stop token): its last line may end mid-sentence, even mid-answer.

    A backend returns such a text as this ``str`` subclass; the generator then keeps its answer only when that
    stands on a line before the cut (a ``So the answer is St. Lou`` that the cut ended is refused, not read
    as ``st. lou``) and the cut falls where no answer is read any more, in an invented next example
    (:func:`~hf_cotmi.teacher.answers.answers_read_at_end`). Any other text is a plain ``str``.

    Examples:
        >>> text = CutOffText("Fish swim. So the answer is (a) se")
        >>> isinstance(text, str), text.endswith("se")
        (True, True)
    """

    __slots__ = ()


class TeacherRequestError(RuntimeError):
    """A teacher request failed for good (not retryable, or retries exhausted).

    Examples:
        >>> str(TeacherRequestError("HTTP 401 from the server"))
        'HTTP 401 from the server'
    """


@runtime_checkable
class TeacherBackend(Protocol):
    """What the generator needs from a teacher.

    Attributes:
        batch_size: most requests per :meth:`generate` call.
        concurrency: most :meth:`generate` calls running at once (threads).
        retries: requests retried so far (read by the generator for its summary).

    Examples:
        >>> isinstance(object(), TeacherBackend)
        False
    """

    batch_size: int
    concurrency: int
    retries: int

    def generate(self, requests: Sequence[GenerationRequest]) -> list[str]:
        """The completion text of each request, in order (a :class:`CutOffText` for one cut off at the
        token limit)."""
        ...

    def settings(self) -> dict[str, Any]:
        """The settings that change what is generated (recorded with the output)."""
        ...


def _load_teacher(auto_class: Any, what: str, name: str, **options: Any) -> Any:
    """``auto_class.from_pretrained(name)``; a name that is neither a loadable folder nor on the Hub is a usage
    error naming it (``could not load the teacher model 'x': it is not a local folder, ...``)."""
    from ..students import failed_load_error

    try:
        return auto_class.from_pretrained(name, **options)
    except (OSError, ValueError) as error:
        raise failed_load_error(f"teacher {what}", name, error) from error


class OpenAICompatibleBackend:
    """A teacher behind an OpenAI-compatible HTTP API, through the ``openai`` client.

    Args:
        base_url: the API root, e.g. ``http://127.0.0.1:8000/v1``. A server on this machine (``localhost``,
            ``127.0.0.1``, ``::1``) is asked directly; any other goes through the environment's proxy, if any.
        model: the model name the server expects.
        api: ``chat`` (``/chat/completions``: the server applies its chat template) or ``completions``
            (``/completions``: the raw prompt, for base models).
        api_key_env: environment variable holding the API key; when it is unset a placeholder is sent
            (local servers accept any key). The key is never logged or written.
        max_new_tokens: ``max_tokens`` of each request.
        temperature: 0 decodes greedily; above 0 samples.
        top_p: nucleus sampling (None: the server's default).
        concurrency: requests in flight at once.
        request_timeout: seconds a request may take in all (connecting, the server's generation, the whole
            reply) before it counts as timed out and is retried; a reply still coming in then is not waited
            for (its connection closes when the server ends it, or is silent for as long). ``math.inf``, or
            anything above ``threading.TIMEOUT_MAX`` (some 292 years; waits take no longer): no limit.
        retry_policy: backoff and number of retries.
        stop: stop sequences sent with each request (None: none).

    Attributes:
        reply_model_check: called with the model name each reply reports (its ``model`` field; a reply
            naming none is not checked) before the reply's text is used; what it raises ends that request,
            without a retry, and reaches the caller of :meth:`generate` as it is. None (the default): no
            check. :func:`~hf_cotmi.teacher.generate.generate_rationales` sets a
            :class:`~hf_cotmi.teacher.store.ReplyModelCheck` for the length of a run.

    Examples:
        >>> backend = OpenAICompatibleBackend("http://127.0.0.1:8000/v1", "teacher")  # doctest: +SKIP
        >>> backend.generate([GenerationRequest(0, 0, "Q: 1 + 1?\\nA:", None)])  # doctest: +SKIP
        ['1 + 1 is 2. So the answer is 2.']
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api: str = "chat",
        api_key_env: str = "OPENAI_API_KEY",
        max_new_tokens: int = 256,
        temperature: float = 0.0,
        top_p: float | None = None,
        concurrency: int = 4,
        request_timeout: float = 120.0,
        retry_policy: RetryPolicy | None = None,
        stop: Sequence[str] | None = None,
    ) -> None:
        try:
            import openai
        except ImportError as error:  # pragma: no cover - depends on the environment
            raise ImportError(
                "the OpenAI-compatible backend needs the openai client: pip install 'hf-cotmi[teacher]'"
            ) from error
        if api not in ("chat", "completions"):
            raise ValueError(f"api={api!r} must be 'chat' or 'completions'")
        if not base_url:
            raise ValueError("base_url must be the API root, e.g. http://127.0.0.1:8000/v1")
        if not model:
            raise ValueError("model must name the model on the server (--model)")
        check_positive("max_new_tokens", max_new_tokens)
        check_positive("concurrency", concurrency)
        check_sampling(temperature, top_p)
        check_request_timeout(request_timeout)
        self._openai = openai
        self.base_url, self.model, self.api = base_url, model, api
        self.max_new_tokens, self.temperature, self.top_p = max_new_tokens, temperature, top_p
        self.stop = list(stop) if stop else None
        self.batch_size, self.concurrency = 1, concurrency
        self.request_timeout = request_timeout
        self.retry_policy = retry_policy or RetryPolicy()
        self.reply_model_check: Callable[[str], None] | None = None
        self.retries = 0
        self._lock = threading.Lock()
        self._rng = random.Random()
        self._cancelled = threading.Event()
        # The key goes to the client only; it is never part of settings(), logs or errors.
        # A server on this machine is asked directly: a proxy of the environment (http_proxy) cannot reach it.
        http_client = _direct_http_client(openai) if _is_loopback_url(base_url) else None
        self._client = openai.OpenAI(
            base_url=base_url,
            api_key=os.environ.get(api_key_env) or "not-needed",
            max_retries=0,
            # the client's timeout limits each wait (to connect, for the next bytes of the reply), not the whole
            # request, which _once limits; it also ends a request given up on that the server keeps silent on.
            # None: no limit (a socket takes no infinite timeout, nor one above threading.TIMEOUT_MAX)
            timeout=_wait_timeout(request_timeout),
            http_client=http_client,
        )

    def settings(self) -> dict[str, Any]:
        """The result-changing settings (no key, no URL credentials)."""
        return {
            "backend": "openai-compatible",
            "model": self.model,
            "api": self.api,
            "max_new_tokens": self.max_new_tokens,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "stop": self.stop,
        }

    def _classify(self, error: Exception) -> Exception:
        """A RetryableError for transient failures (timeouts, connection errors, 429, most 5xx, a reply whose
        JSON is cut short); a TeacherRequestError for other HTTP errors; any other error as it is."""
        openai = self._openai
        if isinstance(error, openai.APIConnectionError):  # includes APITimeoutError
            kind = "timed out" if isinstance(error, openai.APITimeoutError) else "connection failed"
            return RetryableError(f"request to {self.base_url} {kind}")
        if isinstance(error, openai.APIStatusError):
            status = error.status_code
            headers = getattr(error.response, "headers", {}) or {}
            if status in _RETRYABLE_STATUS or (status >= 500 and status not in _PERMANENT_SERVER_STATUS):
                retry_after = parse_retry_after(headers.get("retry-after"))
                milliseconds = headers.get("retry-after-ms")
                if retry_after is None and milliseconds is not None:
                    seconds = parse_retry_after(milliseconds)
                    retry_after = None if seconds is None else seconds / 1000.0
                return RetryableError(f"HTTP {status} from {self.base_url}", retry_after=retry_after)
            return TeacherRequestError(
                f"HTTP {status} from {self.base_url} for model {self.model!r} ({self.api} API): "
                f"{str(getattr(error, 'message', '') or error)[:300]}"
            )
        if isinstance(error, UnicodeDecodeError):
            # JSON must be UTF-8: a body that is not (a proxy's, a broken server's) failed in the client's
            # json.loads with an error naming neither the server nor the reply
            body, start, end = error.object, error.start, error.end
            return RetryableError(
                f"{self.base_url} answered with a body that is not UTF-8 (byte {body[start:end]!r} at position "
                f"{start}): {body[max(0, start - 80) : end + 40]!r}"
            )
        if isinstance(error, json.JSONDecodeError):
            # a reply said to be JSON whose body is not (cut short by a proxy or a crashing server): the
            # client's error names neither the server nor the reply; asking again may get a whole one
            return RetryableError(
                f"{self.base_url} answered with a body that is not valid JSON ({error.msg} at character "
                f"{error.pos}): {error.doc[:200]!r}"
            )
        return error

    def _once(self, request: GenerationRequest) -> tuple[str, str | None]:
        """One attempt at ``request``: its text, and the model name the reply reports (None if it names none)."""
        options: dict[str, Any] = {"model": self.model, "max_tokens": self.max_new_tokens}
        options["temperature"] = self.temperature
        if self.top_p is not None:
            options["top_p"] = self.top_p
        if request.seed is not None:
            options["seed"] = request.seed
        if self.stop:
            options["stop"] = self.stop
        if self.api == "chat":
            messages = [{"role": "user", "content": request.prompt}]
            create = functools.partial(self._client.chat.completions.create, messages=messages, **options)
        else:
            create = functools.partial(self._client.completions.create, prompt=request.prompt, **options)
        try:
            response = _call_with_deadline(
                create, self.request_timeout, f"teacher-request-{request.index}-{request.sample}"
            )
        except _DeadlinePassed:
            raise RetryableError(
                f"request to {self.base_url} timed out: no whole reply within {self.request_timeout:g} s "
                "(request_timeout)"
            ) from None
        except Exception as error:
            raise self._classify(error) from error
        if not hasattr(response, "choices"):
            # the client hands back the body as it came when it is not JSON (an HTML error page, a proxy)
            raise RetryableError(
                f"{self.base_url} answered with something that is not a completion: {str(response)[:200]!r}"
            )
        model = getattr(response, "model", None)
        return self._completion_text(response), model if isinstance(model, str) and model.strip() else None

    def _completion_text(self, response: Any) -> str:
        """The reply's ``choices[0]`` text; a refusal's text for a chat reply that refuses (``content: null``
        with a ``refusal``: the sample, logged as a warning, is then unparsable, not retried); a RetryableError
        naming what came instead when it has none (``message: null``, a tool call), a TeacherRequestError
        when it is not a string."""
        where = "choices[0].message.content" if self.api == "chat" else "choices[0].text"
        came = None
        if response.choices and not isinstance(response.choices, (list, tuple)):
            came = f"choices is a {type(response.choices).__name__}, not a list"
        elif not response.choices:
            # a 200 whose body holds an error instead (some gateways send one): show it
            said = getattr(response, "error", None)
            came = "no choices" + (f", but an error: {str(said)[:300]}" if said else "")
        elif response.choices[0] is None:
            came = "choices[0] is null"
        elif self.api == "chat" and getattr(response.choices[0], "message", None) is None:
            came = "choices[0].message is null"
        if came is not None:
            raise RetryableError(
                f"{self.base_url} answered without a completion text: {came}; expected the text in {where}"
            )
        first = response.choices[0]
        text = getattr(first.message, "content", None) if self.api == "chat" else getattr(first, "text", None)
        refusal = getattr(getattr(first, "message", None), "refusal", None) if self.api == "chat" else None
        if text is None and isinstance(refusal, str) and refusal.strip():
            # the teacher's answer, as deterministic as any: asking again gets it again. It is the sample's
            # text, so the record reaches the rejects file with it (no answer sentence) and the run goes on
            logger.warning(
                "the teacher refused a request (the sample goes to the rejects file): %r", refusal[:200]
            )
            return refusal
        if text is None:
            raise RetryableError(
                f"{self.base_url} answered without a completion text: {where} is null{_no_text_reason(first)}; "
                "expected a string"
            )
        if not isinstance(text, str):  # e.g. a list of content parts: a format this client does not read
            raise TeacherRequestError(
                f"{self.base_url} answered, but {where} is a {type(text).__name__}; expected a string"
            )
        return CutOffText(text) if getattr(first, "finish_reason", None) == "length" else text

    def _count_retry(self, attempt: int, error: RetryableError, delay: float) -> None:
        with self._lock:
            self.retries += 1
        # a server asking for a long wait (Retry-After) is honoured: say so where it is seen, not only at INFO;
        # a wait shorter than the ask was capped (max_retry_after), and call_with_retries warned of it already
        long_wait = error.retry_after is not None and _LONG_WAIT_S < error.retry_after <= delay
        level = logging.WARNING if long_wait else logging.INFO
        logger.log(level, "retry %d after %s: waiting %.2f s", attempt + 1, error, delay)

    def cancel(self, cancelled: bool = True) -> None:
        """Make no further attempt: a retry's wait ends at once, and each :meth:`generate` call in progress
        raises ``TeacherRequestError`` once its request in flight (if any) returns or times out.
        ``cancel(False)`` makes the backend usable again.

        The generator calls it when a run stops by an exception (Ctrl-C, a write error such as a full disk),
        so worker threads do not go on retrying before the process can exit, and ``cancel(False)`` when a
        run starts.

        Examples:
            >>> # backend.cancel()  # from another thread; generate() then stops at its next wait
        """
        if cancelled:
            self._cancelled.set()
        else:
            self._cancelled.clear()

    def _wait_unless_cancelled(self, seconds: float) -> None:
        if self._cancelled.wait(_wait_timeout(seconds)):  # Retry-After with max_retry_after=inf: any length
            raise TeacherRequestError("cancelled while waiting to retry")

    def generate(self, requests: Sequence[GenerationRequest]) -> list[str]:
        """Complete each request (one HTTP call each, retried on transient failures); each reply's model name
        goes through :attr:`reply_model_check` first, when one is set."""
        texts = []
        for request in requests:
            if self._cancelled.is_set():
                raise TeacherRequestError(f"record {request.index} (sample {request.sample}): cancelled")
            try:
                text, model = call_with_retries(
                    functools.partial(self._once, request),
                    self.retry_policy,
                    on_retry=self._count_retry,
                    sleep=self._wait_unless_cancelled,
                    rng=self._rng,
                )
            except RetryableError as error:
                raise TeacherRequestError(
                    f"record {request.index} (sample {request.sample}): {error}; gave up after "
                    f"{self.retry_policy.max_retries} retries"
                ) from error
            except TeacherRequestError as error:  # not retryable: say which record, so it can be found
                raise TeacherRequestError(
                    f"record {request.index} (sample {request.sample}): {error}"
                ) from error
            except Exception as error:  # the client's own failure on an odd reply: still name the record
                raise TeacherRequestError(
                    f"record {request.index} (sample {request.sample}): {type(error).__name__}: {error}"
                ) from error
            check = self.reply_model_check
            if check is not None and model is not None:
                check(model)  # outside the handlers above: its error reaches the caller as it is
            texts.append(text)
        return texts


def _wait_timeout(seconds: float) -> float | None:
    """``seconds`` as the timeout of a wait (a socket's, a thread's): None, no limit, for ``math.inf`` and for
    anything above ``threading.TIMEOUT_MAX`` (some 292 years), which such waits refuse with OverflowError.

    Examples:
        >>> _wait_timeout(120.0), _wait_timeout(float("inf")), _wait_timeout(1e10)
        (120.0, None, None)
    """
    return seconds if seconds <= threading.TIMEOUT_MAX else None


class _DeadlinePassed(Exception):
    """The function given to :func:`_call_with_deadline` had not returned by its deadline."""


def _call_with_deadline(function: Callable[[], Any], seconds: float, name: str) -> Any:
    """``function()``, run in a daemon thread named ``name``: its result or its error, or ``_DeadlinePassed``
    when it has not returned within ``seconds`` (``math.inf``, or above ``threading.TIMEOUT_MAX``: no
    deadline, :func:`_wait_timeout`).

    The HTTP client's timeout limits each wait for the next bytes, so a server sending a byte now and then
    keeps a request going for as long as it likes; this limits the whole of it. A call given up on is not
    stopped (a blocking call cannot be), only no longer waited for; its result is dropped.

    Examples:
        >>> _call_with_deadline(lambda: 42, 1.0, "example")
        42
        >>> import time
        >>> try:
        ...     _call_with_deadline(lambda: time.sleep(1.0), 0.05, "example")
        ... except _DeadlinePassed:
        ...     print("gave up")
        gave up
    """
    future: Future = Future()

    def run() -> None:
        try:
            future.set_result(function())
        except BaseException as error:  # handed to the caller, if it still waits
            future.set_exception(error)

    threading.Thread(target=run, name=name, daemon=True).start()
    finished, _ = wait([future], timeout=_wait_timeout(seconds))
    if not finished:
        raise _DeadlinePassed
    return future.result()


def _is_loopback_url(url: str) -> bool:
    """Whether ``url`` points at this machine: host ``localhost`` or a loopback address (``127.0.0.0/8``, ``::1``).

    Requests to such a URL must not go through a proxy of the environment (``http_proxy``), which cannot
    reach this machine's servers; any other host keeps honouring it.

    Examples:
        >>> [_is_loopback_url(url) for url in ("http://127.0.0.1:8000/v1", "http://[::1]:8000/v1")]
        [True, True]
        >>> [_is_loopback_url(url) for url in ("http://LocalHost:8000/v1", "https://api.example.com/v1")]
        [True, False]
    """
    try:
        host = urllib.parse.urlsplit(url).hostname
    except ValueError:  # a malformed URL (an unclosed "[") is for the client to refuse
        return False
    if not host:
        return False
    if host.rstrip(".") == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name
        return False


def _direct_http_client(openai: Any) -> Any:
    """An HTTP client for the ``openai`` client that reads no proxy from the environment (``trust_env=False``),
    with the ``openai`` package's own defaults (connection limits, redirects) where it exports them."""
    default_client = getattr(openai, "DefaultHttpxClient", None)
    if default_client is not None:
        return default_client(trust_env=False)
    import httpx  # pragma: no cover - openai releases before DefaultHttpxClient (they depend on httpx)

    return httpx.Client(trust_env=False, follow_redirects=True)  # pragma: no cover


def _no_text_reason(choice: Any) -> str:
    """What a choice without text says instead, e.g. `` (refusal: 'No.'; finish_reason: 'stop')``; "" if nothing."""
    message = getattr(choice, "message", None)
    said = []
    refusal = getattr(message, "refusal", None)
    if refusal:
        said.append(f"refusal: {str(refusal)[:200]!r}")
    tool_calls = getattr(message, "tool_calls", None)
    if tool_calls:
        names = [getattr(getattr(call, "function", None), "name", "?") for call in tool_calls]
        said.append(f"tool calls: {', '.join(map(str, names))}")
    finish_reason = getattr(choice, "finish_reason", None)
    if finish_reason:
        said.append(f"finish_reason: {finish_reason!r}")
    return f" ({'; '.join(said)})" if said else ""


class LocalCausalBackend:
    """A local Hugging Face causal language model as the teacher: batched ``generate``, left padding.

    Prompts go through the tokenizer's chat template when it has one (``use_chat_template=None``), as a
    chat server would; otherwise they are tokenised as they are. Greedy decoding at temperature 0, sampling
    above it, one sequence per prompt and no beam search whatever the model's generation config says.
    Generation stops at the generation config's EOS, the tokenizer's EOS and, with a chat template, the
    token that ends the template's assistant turn (``<|im_end|>``, ``<|eot_id|>``, ...: :func:`stop_token_ids`).
    A prompt whose tokens and ``max_new_tokens`` do not fit in the model's context is refused, naming its record.
    The teacher must be decoder-only: an encoder-decoder model (T5) is refused.

    Args:
        model_name_or_path: a Hub name or a local folder with model and tokenizer.
        max_new_tokens: tokens generated per prompt.
        temperature: 0 decodes greedily; above 0 samples, one request at a time from its own seed (a
            record's samples then do not depend on the batch it fell in, so a resumed run repeats them).
        top_p: nucleus sampling (None: the model's default).
        batch_size: prompts per ``generate`` call.
        device: ``cuda``, ``cpu``, ... (default: CUDA when available).
        use_chat_template: True / False to force; None uses it when the tokenizer has one.
        chat_template_file: a Jinja chat template file to use instead of the tokenizer's.
        trust_remote_code: passed to ``from_pretrained`` (off unless you ask).
        dtype: ``torch_dtype`` name for loading (``auto``, ``bfloat16``, ...).
        model: an already loaded model (then ``tokenizer`` too); ``model_name_or_path`` only names it.
        tokenizer: an already loaded tokenizer.

    Examples:
        >>> backend = LocalCausalBackend("Qwen/Qwen2.5-0.5B-Instruct", batch_size=16)  # doctest: +SKIP
    """

    def __init__(
        self,
        model_name_or_path: str,
        *,
        max_new_tokens: int = 256,
        temperature: float = 0.0,
        top_p: float | None = None,
        batch_size: int = 8,
        device: str | None = None,
        use_chat_template: bool | None = None,
        chat_template_file: str | os.PathLike[str] | None = None,
        trust_remote_code: bool = False,
        dtype: str = "auto",
        model: Any = None,
        tokenizer: Any = None,
    ) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        check_positive("max_new_tokens", max_new_tokens)
        check_positive("batch_size", batch_size)
        check_sampling(temperature, top_p)
        self.model_name_or_path = str(model_name_or_path)
        self.max_new_tokens, self.temperature, self.top_p = max_new_tokens, temperature, top_p
        self.batch_size, self.concurrency, self.retries = batch_size, 1, 0
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        if tokenizer is None:
            tokenizer = _load_teacher(
                AutoTokenizer, "tokenizer", self.model_name_or_path, trust_remote_code=trust_remote_code
            )
        tokenizer.padding_side = "left"
        if tokenizer.pad_token_id is None:
            if tokenizer.eos_token_id is None:
                raise ValueError(
                    f"{self.model_name_or_path}: the tokenizer has neither a pad nor an EOS token"
                )
            tokenizer.pad_token = tokenizer.eos_token
        if chat_template_file is not None:
            if not os.path.isfile(chat_template_file):
                raise FileNotFoundError(f"chat template {str(chat_template_file)!r} does not exist")
            with open(chat_template_file, encoding="utf-8") as handle:
                tokenizer.chat_template = handle.read()
        has_template = bool(getattr(tokenizer, "chat_template", None))
        if use_chat_template and not has_template:
            raise ValueError(
                f"{self.model_name_or_path}: the tokenizer has no chat template; pass a chat template file "
                "or use the raw prompt"
            )
        self.use_chat_template = has_template if use_chat_template is None else use_chat_template
        self.chat_template = tokenizer.chat_template if self.use_chat_template else None
        if model is None:
            _refuse_encoder_decoder(
                _saved_config(self.model_name_or_path, trust_remote_code), self.model_name_or_path
            )
            model = _load_teacher(
                AutoModelForCausalLM,
                "model",
                self.model_name_or_path,
                dtype=dtype,
                trust_remote_code=trust_remote_code,
            )
        _refuse_encoder_decoder(getattr(model, "config", None), self.model_name_or_path)
        self.context = _teacher_context(model, self.model_name_or_path, max_new_tokens)
        self.tokenizer, self.model = tokenizer, model.to(self.device).eval()
        self.stop_token_ids = stop_token_ids(model, tokenizer, chat_template=self.use_chat_template)

    def settings(self) -> dict[str, Any]:
        """The result-changing settings."""
        import hashlib

        template = self.chat_template
        return {
            "backend": "local",
            "model": self.model_name_or_path,
            "max_new_tokens": self.max_new_tokens,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "chat_template_sha256": hashlib.sha256(template.encode()).hexdigest() if template else None,
        }

    def _check_room(self, requests: Sequence[GenerationRequest], prompt_lengths: Sequence[int]) -> None:
        """Refuse a batch with a prompt whose tokens and ``max_new_tokens`` are more than the context."""
        if self.context is None:
            return
        for request, length in zip(requests, prompt_lengths):
            if length + self.max_new_tokens > self.context:
                raise TeacherRequestError(
                    f"record {request.index} (sample {request.sample}): the prompt is {length} tokens; with "
                    f"max_new_tokens={self.max_new_tokens} that is {length + self.max_new_tokens} tokens, more "
                    f"than the teacher's context of {self.context} ({self.model_name_or_path}); shorten the "
                    "prompt template or this input, or lower max_new_tokens"
                )

    def _text(self, prompt: str) -> str:
        if not self.use_chat_template:
            return prompt
        return self.tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
        )

    def generate(self, requests: Sequence[GenerationRequest]) -> list[str]:
        """Complete a batch of requests with one left-padded ``generate`` call (sampling with seeds: one
        call per request, each seeded with its own seed)."""
        if not requests:
            return []
        if self.temperature > 0 and len(requests) > 1 and any(r.seed is not None for r in requests):
            return [text for request in requests for text in self._generate_batch([request])]
        return self._generate_batch(requests)

    def _generate_batch(self, requests: Sequence[GenerationRequest]) -> list[str]:
        import torch

        # A chat template writes its own special tokens; a raw prompt gets the tokenizer's (as servers do).
        encoded = self.tokenizer(
            [self._text(request.prompt) for request in requests],
            padding=True,
            return_tensors="pt",
            add_special_tokens=not self.use_chat_template,
        ).to(self.device)
        self._check_room(requests, encoded["attention_mask"].sum(dim=1).tolist())
        # one sequence per prompt, without beam search, whatever the model's generation config ships: greedy
        # at temperature 0, sampling above it (a shipped num_beams made "greedy" a beam search, and a shipped
        # num_return_sequences handed back more texts than prompts)
        options: dict[str, Any] = {
            "max_new_tokens": self.max_new_tokens,
            "pad_token_id": self.tokenizer.pad_token_id,
            "num_beams": 1,
            "num_return_sequences": 1,
        }
        if self.stop_token_ids:
            options["eos_token_id"] = self.stop_token_ids
        if self.temperature > 0:
            options.update(do_sample=True, temperature=self.temperature)
            if self.top_p is not None:
                options["top_p"] = self.top_p
            if requests[0].seed is not None:
                torch.manual_seed(requests[0].seed)
        else:
            options.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        with torch.inference_mode():
            output = self.model.generate(**encoded, **options)
        generated = output[:, encoded["input_ids"].shape[1] :]
        texts = self.tokenizer.batch_decode(generated, skip_special_tokens=True)
        if generated.shape[1] < self.max_new_tokens:  # every row stopped before the limit
            return texts
        # a row without a stop token ran into max_new_tokens (a finished row holds its stop token, then padding)
        stop = torch.tensor(self.stop_token_ids, dtype=generated.dtype, device=generated.device)
        stopped = torch.isin(generated, stop).any(dim=1)
        return [text if done else CutOffText(text) for text, done in zip(texts, stopped.tolist())]


def _saved_config(name: str, trust_remote_code: bool) -> Any:
    """The model config saved under ``name``, or None when it cannot be read (the model load then says why)."""
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(name, trust_remote_code=trust_remote_code)
    except (OSError, ValueError):
        return None


def _refuse_encoder_decoder(config: Any, name: str) -> None:
    """A usage error for an encoder-decoder teacher (T5, BART): the local backend runs causal LMs only."""
    from ..run_arguments import CLIUsageError

    if getattr(config, "is_encoder_decoder", False):
        raise CLIUsageError(
            f"the teacher model {name!r} is an encoder-decoder ({getattr(config, 'model_type', '?')}) model; "
            "the local teacher backend runs decoder-only causal language models (AutoModelForCausalLM): "
            "give a decoder-only teacher"
        )


def _teacher_context(model: Any, name: str, max_new_tokens: int) -> int | None:
    """The model's context in tokens (None when its config names none); a usage error when
    ``max_new_tokens`` alone fills it."""
    from ..run_arguments import CLIUsageError
    from ..students import context_length

    context = context_length(model, None)  # the model's positions: a tokenizer's limit may understate them
    if context is not None and max_new_tokens >= context:
        raise CLIUsageError(
            f"max_new_tokens={max_new_tokens} leaves no room for a prompt in the teacher's context of {context} "
            f"tokens ({name}); ask for fewer new tokens"
        )
    return context


def _is_special(tokenizer: Any, token_id: int) -> bool:
    added = getattr(tokenizer, "added_tokens_decoder", None) or {}
    return token_id in set(tokenizer.all_special_ids) or bool(getattr(added.get(token_id), "special", False))


def chat_turn_end_token_id(tokenizer: Any) -> int | None:
    """The special token the tokenizer's chat template ends an assistant turn with, or None.

    The template is rendered with an assistant message; the first token after the message's text is the
    answer when it is a special token (``<|im_end|>`` for ChatML/Qwen, ``<|eot_id|>`` for Llama 3,
    ``<end_of_turn>`` for Gemma, ``</s>`` for Mistral). None when there is no template, the template ends a
    turn with plain text, or it cannot render such a conversation.

    Examples:
        >>> from hf_cotmi.tiny import build_word_tokenizer
        >>> tok = build_word_tokenizer(["user assistant"])
        >>> tok.chat_template = "{% for m in messages %}{{ m['content'] }}</s>{% endfor %}"
        >>> tok.convert_ids_to_tokens(chat_turn_end_token_id(tok))
        '</s>'
    """
    marker = "hf-cotmi-end-of-turn-probe"
    if not getattr(tokenizer, "chat_template", None):
        return None
    conversation = [{"role": "user", "content": "x"}, {"role": "assistant", "content": marker}]
    try:
        rendered = tokenizer.apply_chat_template(conversation, tokenize=False)
    except Exception as error:  # a template's own checks (roles, system prompts): no end-of-turn token known
        logger.debug("the chat template could not render an assistant turn: %s", error)
        return None
    if not isinstance(rendered, str) or marker not in rendered:
        return None
    tail = rendered[rendered.rindex(marker) + len(marker) :].lstrip()
    ids = tokenizer(tail, add_special_tokens=False)["input_ids"] if tail else []
    return ids[0] if ids and _is_special(tokenizer, ids[0]) else None


def stop_token_ids(model: Any, tokenizer: Any, *, chat_template: bool) -> list[int]:
    """The token ids a local teacher's generation stops at: the generation config's EOS, the tokenizer's EOS
    and, when prompts go through the chat template, the token that ends its assistant turn
    (:func:`chat_turn_end_token_id`). ``generate`` alone stops at the generation config's EOS only, and a
    model whose config lacks its chat end-of-turn token (as some Llama 3 releases did) writes on into a
    made-up next turn up to ``max_new_tokens``.

    Examples:
        >>> from types import SimpleNamespace
        >>> model = SimpleNamespace(generation_config=SimpleNamespace(eos_token_id=[2, 7]), config=None)
        >>> stop_token_ids(model, SimpleNamespace(eos_token_id=9, chat_template=None), chat_template=False)
        [2, 7, 9]
    """
    from ..students import eos_token_ids

    ids = eos_token_ids(
        model, tokenizer
    )  # the generation config's (else the model config's) and the tokenizer's
    turn_end = chat_turn_end_token_id(tokenizer) if chat_template else None
    if turn_end is not None:
        ids.add(int(turn_end))
    return sorted(ids)
