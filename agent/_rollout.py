"""Over-the-air deploys on the device: authorize, fetch, check, install, health-check, then commit.

The daemon's ``deploy`` and ``rollback`` handlers (:meth:`edgekws.agent._daemon.Agent.handle_command`)
run :class:`Deployer`; each refusal or failure is a :class:`DeployError` whose ``detail`` goes into the
``deploy.failed`` / ``rollback.failed`` event (with filesystem paths removed, :func:`public_text`).

``deploy``, in order (docs/mqtt.md, "Commands on the device"):

1. **authorize**: a downgrade (``"rollback": true``) needs a signed deploy order (:func:`check_order`);
2. **fetch** (:func:`fetch_bundle`): inline base64 ``data``, or a URL that ``[rollout] allowed_urls``
   permits (:class:`UrlRule`: scheme, host, port and path prefix; ``file://`` only inside an allowed
   folder, regular files only), under one total deadline and a size cap checked while streaming;
3. **check** its sha256 against the command's (a mismatch is refused before anything is written);
4. **install** it into the device store *without activating it* (signature and hashes against the
   trusted keys, no downgrade unless authorized);
5. **load** it beside the running pipeline and run :func:`health_check` (one warm-up window, then a timed
   one); on failure the new version is removed again and nothing else changed;
6. **commit**: the store's ``current`` moves (:meth:`DeviceStore.activate`, which prunes old versions
   only now), then the running pipeline is swapped.

``current`` therefore only ever points at a version that passed the check: a crash or ``kill -9`` at any
moment leaves the old or the new checked version active. A bundle that still fails to load at start
(installed by hand, or broken by a new backend) is handled by :meth:`Deployer.open_at_start`: it falls
back to ``previous`` and reports it.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import http.client
import json
import math
import os
import posixpath
import re
import ssl
import stat
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import unquote, urljoin, urlsplit

import numpy as np

from edgekws.agent._decision import decide
from edgekws.agent._device_store import DeviceStore, InstalledBundle, StoreError
from edgekws.agent._frontend import Frontend, FrontendSpec
from edgekws.agent._pipeline import Pipeline
from edgekws.agent.mqtt import BundleRef, DeployCommand, SignedOrder
from edgekws.packaging import (
    ORDER_CONTEXT,
    Bundle,
    KeyFileError,
    TrustLike,
    as_trust_store,
    atomic_write_text,
    parse_created,
    verify_detached,
)


class DeployError(RuntimeError):
    """A deploy that was refused or failed; ``detail`` is reported on the ``event`` topic."""

    def __init__(self, message: str, **detail: Any) -> None:
        super().__init__(message)
        self.detail: dict[str, Any] = {"reason": message, **detail}


# -- what may leave the device ---------------------------------------------------------------------------

_ABS_PATH = re.compile(r"(?<![\w.:/~-])/(?:[^\s'\"`:,;()\[\]{}<>/]+/)*([^\s'\"`:,;()\[\]{}<>/]*)")


def public_text(text: str) -> str:
    """``text`` with every absolute filesystem path cut to its last component (``…/name``): what a device
    publishes must not map its disk (URLs are left alone)."""
    return _ABS_PATH.sub(lambda m: f"…/{m.group(1)}", text)


# -- where a bundle may come from (M3) -------------------------------------------------------------------

_DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass(frozen=True)
class UrlRule:
    """One ``[rollout] allowed_urls`` entry: a scheme, a host and port (http/https), a path prefix.

    ``https://bundles.example/releases/`` allows ``https://bundles.example:443/releases/...`` only;
    ``file:///var/lib/edgekws/incoming/`` allows regular files inside that folder (symbolic links are
    resolved first, so a link cannot lead out of it).
    """

    scheme: str
    host: str | None
    port: int | None
    path: str  # ends with "/"

    @classmethod
    def parse(cls, text: str) -> UrlRule:
        """Parse an entry; ``ValueError`` says what is wrong with it."""
        parts = urlsplit(text)
        scheme = parts.scheme.lower()
        if scheme not in ("file", "http", "https"):
            raise ValueError(f"allowed URL {text!r} must start with file://, http:// or https://")
        if parts.query or parts.fragment or parts.username or parts.password:
            raise ValueError(f"allowed URL {text!r} must not have a query, fragment or login")
        path = posixpath.normpath(unquote(parts.path or "/"))
        if not path.startswith("/"):
            raise ValueError(f"allowed URL {text!r} needs an absolute path")
        path = path.rstrip("/") + "/"
        if scheme == "file":
            if parts.netloc not in ("", "localhost"):
                raise ValueError(f"allowed file URL {text!r} must be local: file:///folder/")
            return cls("file", None, None, path)
        if not parts.hostname:
            raise ValueError(f"allowed URL {text!r} names no host")
        try:
            port = parts.port or _DEFAULT_PORTS[scheme]
        except ValueError as exc:
            raise ValueError(f"allowed URL {text!r} has a bad port") from exc
        return cls(scheme, parts.hostname.lower(), port, path)

    def allows(self, url: str) -> bool:
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError:
            return False
        scheme = parts.scheme.lower()
        if scheme != self.scheme or parts.username or parts.password:
            return False
        if scheme == "file":
            if parts.netloc not in ("", "localhost"):
                return False
            real = os.path.realpath(unquote(parts.path))
            folder = os.path.realpath(self.path)
            return real.startswith(folder.rstrip("/") + "/")
        if (parts.hostname or "").lower() != self.host or (port or _DEFAULT_PORTS[scheme]) != self.port:
            return False
        raw = unquote(parts.path or "/")
        if ".." in raw.split("/"):
            return False
        return posixpath.normpath(raw).startswith(self.path)


def check_url(url: str, rules: list[UrlRule]) -> None:
    """:class:`DeployError` unless one of ``rules`` allows ``url`` (nothing is read before this check)."""
    if not any(rule.allows(url) for rule in rules):
        hint = (
            "this device accepts inline bundles only: add a prefix to [rollout] allowed_urls"
            if not rules
            else "the device's [rollout] allowed_urls do not cover it"
        )
        raise DeployError(f"bundle URL refused: {hint}", stage="fetch")


def fetch_bundle(
    ref: BundleRef,
    *,
    allowed: list[UrlRule] | None = None,
    timeout_s: float = 60.0,
    max_bytes: int = 256 * 2**20,
) -> bytes:
    """The bundle's bytes from its inline base64 ``data``, or from its ``url`` when ``allowed`` permits it,
    within ``timeout_s`` in all and at most ``max_bytes``."""
    if ref.data is not None:
        if len(ref.data) > (max_bytes * 4) // 3 + 4:
            raise DeployError(
                f"the inline bundle is larger than rollout.max_bundle_bytes = {max_bytes}", stage="fetch"
            )
        try:
            data = base64.b64decode(ref.data, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise DeployError(f"bundle.data is not valid base64 ({exc})", stage="fetch") from exc
    else:
        assert ref.url is not None  # the command model requires one of them
        rules = allowed or []
        check_url(ref.url, rules)
        deadline = time.monotonic() + timeout_s
        if ref.url.lower().startswith("file:"):
            data = _read_file(ref.url, deadline, max_bytes)
        else:
            data = _read_http(ref.url, rules, deadline, max_bytes)
    if len(data) > max_bytes:
        raise DeployError(
            f"the bundle is {len(data)} bytes, more than rollout.max_bundle_bytes = {max_bytes}",
            stage="fetch",
        )
    return data


def _too_big(max_bytes: int) -> DeployError:
    return DeployError(f"the bundle is larger than rollout.max_bundle_bytes = {max_bytes}", stage="fetch")


def _too_slow(deadline_s: float) -> DeployError:
    return DeployError(
        f"the download did not finish within rollout.download_timeout_s = {deadline_s:.3g} s", stage="fetch"
    )


def _read_file(url: str, deadline: float, max_bytes: int) -> bytes:
    """A regular file inside an allowed folder (a device node, FIFO or socket is refused unread)."""
    total_s = max(deadline - time.monotonic(), 0.001)
    path = os.path.realpath(unquote(urlsplit(url).path))
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        raise DeployError(f"cannot open the bundle file ({exc.strerror})", stage="fetch") from exc
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise DeployError("the bundle URL is not a regular file", stage="fetch")
        if st.st_size > max_bytes:
            raise _too_big(max_bytes)
        chunks, total = [], 0
        while chunk := f.read(1 << 20):
            total += len(chunk)
            if total > max_bytes:
                raise _too_big(max_bytes)
            if time.monotonic() > deadline:
                raise _too_slow(total_s)
            chunks.append(chunk)
    return b"".join(chunks)


MAX_REDIRECTS = 3


def _read_http(url: str, rules: list[UrlRule], deadline: float, max_bytes: int) -> bytes:
    """GET ``url`` with :mod:`http.client` (no proxy): every redirect is checked against ``rules`` again,
    every read waits at most the time left to ``deadline``, the size is capped while it streams."""
    total_s = max(deadline - time.monotonic(), 0.001)
    for _ in range(MAX_REDIRECTS + 1):
        parts = urlsplit(url)
        left = deadline - time.monotonic()
        if left <= 0:
            raise _too_slow(total_s)
        conn: http.client.HTTPConnection
        if parts.scheme.lower() == "https":
            conn = http.client.HTTPSConnection(
                parts.hostname or "", parts.port, timeout=left, context=ssl.create_default_context()
            )
        else:
            conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=left)
        try:
            target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
            conn.request("GET", target, headers={"User-Agent": "edgekws-agent", "Accept": "*/*"})
            response = conn.getresponse()
            if response.status in (301, 302, 303, 307, 308):
                url = urljoin(url, response.getheader("Location") or "")
                if not any(rule.allows(url) for rule in rules):
                    raise DeployError(
                        f"the bundle server redirected (HTTP {response.status}) to a URL that [rollout] "
                        "allowed_urls does not cover",
                        stage="fetch",
                    )
                continue
            if response.status != 200:
                raise DeployError(
                    f"cannot fetch the bundle: HTTP {response.status} {response.reason}", stage="fetch"
                )
            length = response.getheader("Content-Length")
            if length is not None and length.isdigit() and int(length) > max_bytes:
                raise _too_big(max_bytes)
            chunks: list[bytes] = []
            total = 0
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise _too_slow(total_s)
                if conn.sock is not None:
                    conn.sock.settimeout(left)
                chunk = response.read1(1 << 16)  # one socket read at most: the deadline is checked between
                if not chunk:
                    return b"".join(chunks)
                total += len(chunk)
                if total > max_bytes:
                    raise _too_big(max_bytes)
                chunks.append(chunk)
        except DeployError:
            raise
        except TimeoutError as exc:
            raise _too_slow(total_s) from exc
        except (OSError, http.client.HTTPException) as exc:
            raise DeployError(
                f"cannot fetch the bundle ({type(exc).__name__}: {exc})", stage="fetch"
            ) from exc
        finally:
            conn.close()
    raise DeployError(f"the bundle server redirected more than {MAX_REDIRECTS} times", stage="fetch")


def check_sha256(data: bytes, expected: str) -> str:
    """The sha256 of ``data``; :class:`DeployError` when it is not ``expected`` (the digest of what was
    fetched is not reported: it would make the device a hash oracle for whatever a URL reaches)."""
    digest = hashlib.sha256(data).hexdigest()
    if digest != expected:
        raise DeployError(
            "sha256 mismatch: the fetched bundle is not the one the command names (tampered or truncated); "
            "nothing was installed",
            stage="verify",
        )
    return digest


# -- authorization (M2) ----------------------------------------------------------------------------------


class OrderBook:
    """The signed deploy orders this device has run (``orders.json`` in the store), so none runs twice;
    entries are forgotten once they have expired (an expired order is refused anyway)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def _load(self) -> dict[str, float]:
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError):
            return {}  # unreadable: expiry still bounds a replay
        return {k: float(v) for k, v in data.items()} if isinstance(data, dict) else {}

    def used(self, order_id: str) -> bool:
        return order_id in self._load()

    def record(self, order_id: str, not_after: float) -> None:
        now = time.time()
        book = {k: v for k, v in self._load().items() if v >= now}
        book[order_id] = not_after
        try:
            atomic_write_text(self.path, json.dumps(book, sort_keys=True) + "\n")
        except OSError as exc:
            raise DeployError(
                f"cannot record the deploy order as used ({exc.strerror or exc}); refusing to run it",
                stage="authorize",
            ) from exc


def check_order(
    signed: SignedOrder | None,
    *,
    action: Literal["deploy", "rollback"],
    name: str,
    version: str,
    sha256: str | None,
    device: str,
    trusted: TrustLike,
    book: OrderBook,
    now: float | None = None,
) -> None:
    """Refuse (:class:`DeployError`, stage ``authorize``) unless ``signed`` is an unused, unexpired order
    for ``device`` (``fleet/id``) to do ``action`` with ``name`` ``version`` (and ``sha256`` when the
    order names one), signed by a trusted key; then record it as used."""

    def refuse(why: str) -> DeployError:
        return DeployError(f"not authorized: {why}", stage="authorize")

    what = "a downgrade" if action == "deploy" else "a rollback"
    if signed is None:
        raise refuse(f"{what} needs a signed deploy order (`edgekws fleet deploy --rollback --key KEY`)")
    order = signed.order
    body = order.body()
    try:
        keys = as_trust_store(trusted)
    except (KeyFileError, OSError) as exc:
        raise refuse(f"cannot read the order keys ({public_text(str(exc))})") from exc
    sigs = [(s.key_id, s.signature) for s in signed.signatures]
    if not verify_detached(body, sigs, keys, ORDER_CONTEXT):
        raise refuse("the order is not signed by a key in [rollout] order_keys")
    problems = []
    if order.action != action:
        problems.append(f"the order is for a {order.action}, not a {action}")
    if (order.name, order.version) != (name, version):
        problems.append(f"the order names {order.name} {order.version}, not {name} {version}")
    if order.sha256 is not None and sha256 is not None and order.sha256 != sha256:
        problems.append("the order names another bundle file (sha256)")
    if action == "deploy" and order.sha256 is None:
        problems.append("a deploy order must name the bundle's sha256")
    if device not in order.targets:
        problems.append(f"the order is not for this device ({device})")
    expires = parse_created(order.not_after).timestamp()
    if (now if now is not None else time.time()) > expires:
        problems.append(f"the order expired at {order.not_after}")
    if book.used(order.id):
        problems.append(f"order {order.id} was already used (a replay)")
    if problems:
        raise refuse("; ".join(problems))
    book.record(order.id, expires)


# -- the health check ------------------------------------------------------------------------------------


def selftest_audio(spec: FrontendSpec, steps: int) -> np.ndarray:
    """The built-in health-check audio: one window, the first half silence, then a quiet chirp."""
    n = steps * spec.samples_per_step
    t = np.arange(n - n // 2) / spec.sample_rate
    f0, f1 = 300.0, min(3000.0, spec.sample_rate / 4)
    chirp = 0.1 * np.sin(2 * np.pi * (f0 * t + (f1 - f0) * t**2 / (2 * max(t[-1], 1e-3))))
    return np.concatenate([np.zeros(n // 2), chirp]).astype(np.float32)


def health_check(
    make_backend: Callable[[], Any],
    spec: FrontendSpec,
    labels: list[str],
    steps: int,
    rule: Any,
    max_latency_ms: float,
) -> dict[str, Any]:
    """Run :func:`selftest_audio` through a fresh backend twice; :class:`DeployError` if it fails.

    The first window warms the backend up (a compiled kernel loaded, caches filled: ``warmup_ms``) and is
    not held against it; the second, from zero state again, is timed (``latency_ms``). Passes when the
    backend runs, its readout has one channel per label, every readout value is finite, the decision rule
    gives a label, and the timed window took at most ``max_latency_ms``.
    """
    try:
        spikes = Frontend(spec).process(selftest_audio(spec, steps))[:steps]
        backend = make_backend()
        try:
            t0 = time.perf_counter()
            backend.reset(1)
            backend.step(spikes[None])
            warmup_ms = (time.perf_counter() - t0) * 1e3
            t0 = time.perf_counter()
            backend.reset(1)
            trace = np.asarray(backend.step(spikes[None]))
            latency_ms = (time.perf_counter() - t0) * 1e3
        finally:
            backend.close()
    except Exception as exc:
        raise DeployError(
            f"health check: the backend cannot run the built-in test audio ({type(exc).__name__}: {exc})",
            stage="health",
        ) from exc
    problems = []
    if trace.shape != (1, spikes.shape[0], len(labels)):
        problems.append(f"readout shape {trace.shape}, expected (1, {spikes.shape[0]}, {len(labels)})")
    finite = bool(np.isfinite(trace).all())
    if not finite:
        problems.append(f"{int((~np.isfinite(trace)).sum())} readout value(s) are not finite")
    if latency_ms > max_latency_ms:
        problems.append(f"one window took {latency_ms:.1f} ms, over the {max_latency_ms:g} ms bound")
    label = None
    if not problems:
        decision = decide(trace, rule)
        label = labels[int(decision.labels[0])]
        if not math.isfinite(float(decision.confidence[0])):
            problems.append("the decision's confidence is not finite")
    result = {
        "latency_ms": round(latency_ms, 3),
        "warmup_ms": round(warmup_ms, 3),
        "finite": finite,
        "label": label,
        "input_spikes": int(spikes.sum()),
    }
    if problems:
        raise DeployError("health check failed: " + "; ".join(problems), stage="health", health=result)
    return result


# -- the deployer ----------------------------------------------------------------------------------------

EventFn = Callable[..., None]  # event(kind, level="info", **detail): logged and sent on the event topic
Event = tuple[str, str, dict[str, Any]]  # (kind, level, detail) to send once the link is up


@dataclass(frozen=True)
class RolloutPolicy:
    """What the deployer needs from agent.toml: ``[rollout]`` and who this device is."""

    allowed_urls: tuple[UrlRule, ...] = ()
    order_keys: TrustLike = ()
    download_timeout_s: float = 60.0
    max_bundle_bytes: int = 256 * 2**20
    health_max_latency_ms: float = 2000.0
    device: str = "default/device"  # fleet/id, as deploy orders name it


class Deployer:
    """The ``deploy`` and ``rollback`` commands and the choice of bundle at start (module docstring).

    ``open_pipeline(bundle)`` opens a verified bundle for the daemon (backend + spotter),
    ``swap(pipeline)`` makes it the running one, ``event(kind, level, **detail)`` reports a lifecycle
    event.
    """

    def __init__(
        self,
        store: DeviceStore,
        policy: RolloutPolicy,
        *,
        open_pipeline: Callable[[Bundle], Pipeline],
        swap: Callable[[Pipeline], None],
        event: EventFn,
    ) -> None:
        self.store, self.policy = store, policy
        self.orders = OrderBook(store.root / "orders.json")
        self._open, self._swap, self._event = open_pipeline, swap, event
        self._lock = threading.Lock()  # one deploy or rollback at a time

    # -- at start --------------------------------------------------------------------------------------

    def open_at_start(self) -> tuple[Pipeline | None, list[Event]]:
        """The active bundle opened for the daemon, or, when it cannot be loaded, the previous one (the
        store then records the fall-back: ``current`` <- previous); None when neither loads or nothing is
        installed. Also the events to send once the MQTT link is up."""
        active = self.store.active()
        if active is None:
            return None, []
        try:
            pipeline = self._open(self.store.open_bundle_of(active))
        except Exception as exc:  # any failure to load: a broken bundle must not stop the device
            reason = public_text(_reason(exc))
        else:
            return pipeline, [("bundle.loaded", "info", pipeline.event_detail())]
        previous = self.store.previous()
        if previous is None:
            return None, [("bundle.unusable", "error", {"version": active.version, "reason": reason})]
        try:
            pipeline = self._open(self.store.open_bundle_of(previous))
        except Exception as exc:
            return None, [
                (
                    "bundle.unusable",
                    "error",
                    {
                        "version": active.version,
                        "reason": reason,
                        "previous": previous.version,
                        "previous_reason": public_text(_reason(exc)),
                    },
                )
            ]
        self.store.rollback()  # commit the fall-back: the next start loads the good one directly
        detail = {
            "automatic": True,
            "at": "start",
            "from_version": active.version,
            "to_version": previous.version,
            "reason": reason,
        }
        return pipeline, [("rollback", "warning", detail), ("bundle.loaded", "info", pipeline.event_detail())]

    # -- commands --------------------------------------------------------------------------------------

    def deploy(self, command: DeployCommand) -> dict[str, Any]:
        """Authorize, fetch, check, install, health-check, commit, swap (module docstring)."""
        ref = command.bundle
        base = {
            "command_id": command.id,
            "rollout": command.rollout,
            "name": ref.name,
            "version": ref.version,
        }
        t0 = time.monotonic()
        with self._failures_reported("deploy.failed", base):
            if command.rollback or command.order is not None:
                self._authorize(command.order, "deploy", ref.name, ref.version, ref.sha256)
            p = self.policy
            data = fetch_bundle(
                ref,
                allowed=list(p.allowed_urls),
                timeout_s=p.download_timeout_s,
                max_bytes=p.max_bundle_bytes,
            )
            check_sha256(data, ref.sha256)
            with self._lock:
                pipeline, health, previous = self._install_check_commit(data, ref, rollback=command.rollback)
                self._swap(pipeline)
        result = {
            **base,
            "result": "deployed",
            "previous": previous,
            "backend": pipeline.backend_name,
            "health": health,
            "seconds": round(time.monotonic() - t0, 3),
        }
        self._event("bundle.activated", **pipeline.event_detail(), previous=previous)
        self._event("deploy.deployed", **result)
        return result

    def _authorize(
        self,
        order: SignedOrder | None,
        action: Literal["deploy", "rollback"],
        name: str,
        version: str,
        sha256: str | None,
    ) -> None:
        """:func:`check_order` for this device, against the policy's order keys and used-order book."""
        check_order(
            order,
            action=action,
            name=name,
            version=version,
            sha256=sha256,
            device=self.policy.device,
            trusted=self.policy.order_keys,
            book=self.orders,
        )

    def rollback(
        self,
        to_version: str | None = None,
        *,
        command_id: str | None = None,
        order: SignedOrder | None = None,
    ) -> dict[str, Any]:
        """Activate the previous (or a named installed) version, authorized by a signed order, after the
        same load and health check."""
        base = {"command_id": command_id, "to_version": to_version}
        with self._failures_reported("rollback.failed", base), self._lock:
            active = self.store.active()
            target = self._rollback_target(to_version)
            self._authorize(order, "rollback", target.name, target.version, target.sha256)
            pipeline, health = self._load_and_check(target, deploying=False)
            self.store.activate(target)
            self._swap(pipeline)
        result = {
            **base,
            "result": "rolled back",
            "version": target.version,
            "from_version": active.version if active else None,
            "health": health,
        }
        self._event("rollback", "warning", automatic=False, **result)
        self._event("bundle.activated", **pipeline.event_detail(), previous=result["from_version"])
        return result

    # -- steps -----------------------------------------------------------------------------------------

    def _rollback_target(self, to_version: str | None) -> InstalledBundle:
        if to_version is None:
            target = self.store.previous()
            if target is None:
                raise DeployError(
                    "nothing to roll back to: no previous version is recorded",
                    stage="rollback",
                )
            return target
        found = [b for b in self.store.installed() if b.version == to_version]
        if not found:
            have = ", ".join(b.version for b in self.store.installed()) or "none"
            raise DeployError(f"version {to_version} is not installed (installed: {have})", stage="rollback")
        return found[-1]

    def _install_check_commit(
        self, data: bytes, ref: BundleRef, *, rollback: bool
    ) -> tuple[Pipeline, dict[str, Any], str | None]:
        """Install without activating, load and check beside the running pipeline, then commit."""
        active = self.store.active()
        previous = active.version if active is not None else None
        try:
            fd, tmp_name = tempfile.mkstemp(dir=self.store.root, prefix=".deploy.", suffix=".tmp")
            with os.fdopen(fd, "wb") as f:
                f.write(data)
        except OSError as exc:
            raise DeployError(
                f"cannot stage the bundle in the store ({exc.strerror or exc}); free space on the device",
                stage="install",
                active=previous,
            ) from exc
        try:
            installed = self.store.install(
                tmp_name, activate=False, rollback=rollback, source=f"{ref.name}-{ref.version}"
            )
        except StoreError as exc:
            raise DeployError(str(exc), stage="install", active=previous) from exc
        finally:
            with contextlib.suppress(OSError):
                os.unlink(tmp_name)
        if (installed.name, installed.version) != (ref.name, ref.version):
            if installed.fresh:
                self.store.remove(installed)
            raise DeployError(
                f"the bundle is {installed.label}, but the command names {ref.name}-{ref.version}",
                stage="verify",
                active=previous,
            )
        if active is not None and active.path.name == installed.path.name:
            raise DeployError(
                f"{installed.label} is already the active version", stage="install", active=previous
            )
        pipeline, health = self._load_and_check(installed, deploying=True)
        self.store.activate(installed)  # the commit: current moves, and only now are old versions pruned
        return pipeline, health, previous

    def _load_and_check(self, target: InstalledBundle, *, deploying: bool) -> tuple[Pipeline, dict[str, Any]]:
        """Open ``target`` beside the running pipeline and run the health check; on failure nothing in the
        store changed (a version this deploy wrote is removed again) and a failed deploy reports the
        automatic ``rollback`` to the version that stays active."""
        pipeline: Pipeline | None = None
        try:
            pipeline = self._open(self.store.open_bundle_of(target))
            assert pipeline.factory is not None
            p = self.policy
            health = health_check(
                pipeline.factory,
                pipeline.frontend_spec,
                pipeline.labels,
                pipeline.steps,
                pipeline.rule,
                p.health_max_latency_ms,
            )
        except Exception as exc:
            if pipeline is not None:
                pipeline.close()
            if target.fresh:
                self.store.remove(target)
            stays = self.store.active()
            back = stays.version if stays is not None else None
            reason = public_text(_reason(exc))
            if deploying:
                self._event(
                    "rollback",
                    "warning",
                    automatic=True,
                    from_version=target.label,
                    to_version=back,
                    reason=reason,
                )
            detail = dict(exc.detail) if isinstance(exc, DeployError) else {}
            detail.update(stage=detail.get("stage", "load"), rolled_back=True, active=back)
            detail.pop("reason", None)
            raise DeployError(f"{target.label}: {reason}; {back} stays active", **detail) from exc
        return pipeline, health

    @contextlib.contextmanager
    def _failures_reported(self, event: str, base: dict[str, Any]) -> Iterator[None]:
        """A :class:`DeployError` inside gets ``base`` in its detail and is reported as ``event`` (paths
        removed), then raised on (the command's ``command.failed`` carries the same detail)."""
        try:
            yield
        except DeployError as exc:
            exc.detail.update(base)
            exc.detail["reason"] = public_text(str(exc.detail.get("reason", exc)))
            self._event(event, "error", **exc.detail)
            raise DeployError(exc.detail["reason"], **exc.detail) from exc


def _reason(exc: BaseException) -> str:
    return str(exc) if isinstance(exc, (DeployError, StoreError)) else f"cannot load it ({exc})"


def policy_from_config(config: Any, fleet: str, device: str, trusted_keys: Any) -> RolloutPolicy:
    """The deployer's policy from ``[rollout]`` (order keys default to ``[store] trusted_keys``)."""
    return RolloutPolicy(
        allowed_urls=tuple(UrlRule.parse(u) for u in config.allowed_urls),
        order_keys=list(config.order_keys) or list(trusted_keys),
        download_timeout_s=config.download_timeout_s,
        max_bundle_bytes=config.max_bundle_bytes,
        health_max_latency_ms=config.health_max_latency_ms,
        device=f"{fleet}/{device}",
    )
