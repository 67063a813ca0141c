"""Over-the-air deploys on the device: fetch a bundle, check its bytes, check the new model's health.

The daemon's ``deploy`` handler (:meth:`edgekws.agent._daemon.Agent.handle_command`) runs these steps;
each refusal or failure is a :class:`DeployError` whose ``detail`` goes into the ``deploy.failed`` event:

1. :func:`fetch_bundle`: the bytes from a ``file://`` URL, an ``http(s)://`` URL (urllib, with a timeout
   and a size limit) or the command itself (base64 ``data``);
2. the sha256 of those bytes must equal the command's (a tampered or truncated download is refused
   before anything is written);
3. the device store installs it (signature and every hash against the trusted keys, no downgrade unless
   the command says ``rollback``) and switches ``current`` atomically;
4. the daemon builds the new pipeline (backend + spotter) and runs :func:`health_check`;
5. only then does the running pipeline change; a failed health check puts the store back as it was.

:class:`Deployer` runs these steps for the ``deploy`` and ``rollback`` commands.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import math
import os
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import unquote, urlsplit

import numpy as np

from edgekws.agent._config import RolloutConfig
from edgekws.agent._decision import decide
from edgekws.agent._device_store import DeviceStore, InstalledBundle, StoreError
from edgekws.agent._frontend import Frontend, FrontendSpec
from edgekws.agent._pipeline import Pipeline
from edgekws.agent.mqtt import BundleRef, DeployCommand


class DeployError(RuntimeError):
    """A deploy that was refused or failed; ``detail`` is reported on the ``event`` topic."""

    def __init__(self, message: str, **detail: Any) -> None:
        super().__init__(message)
        self.detail: dict[str, Any] = {"reason": message, **detail}


def fetch_bundle(ref: BundleRef, *, timeout_s: float = 60.0, max_bytes: int = 256 * 2**20) -> bytes:
    """The bundle's bytes from its ``url`` (file, http, https) or its inline base64 ``data``."""
    if ref.data is not None:
        try:
            data = base64.b64decode(ref.data, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise DeployError(f"bundle.data is not valid base64 ({exc})", stage="fetch") from exc
    else:
        assert ref.url is not None  # the command model requires one of them
        data = _read_url(ref.url, timeout_s, max_bytes)
    if len(data) > max_bytes:
        raise DeployError(
            f"the bundle is {len(data)} bytes, more than rollout.max_bundle_bytes = {max_bytes}",
            stage="fetch",
        )
    return data


def _read_url(url: str, timeout_s: float, max_bytes: int) -> bytes:
    parts = urlsplit(url)
    try:
        if parts.scheme == "file":
            if parts.netloc not in ("", "localhost"):
                raise DeployError(f"file URLs must be local (file:///path), got {url!r}", stage="fetch")
            with open(unquote(parts.path), "rb") as f:
                return f.read(max_bytes + 1)
        if parts.scheme in ("http", "https"):
            with urllib.request.urlopen(url, timeout=timeout_s) as response:  # scheme checked above
                return bytes(response.read(max_bytes + 1))
    except (OSError, urllib.error.URLError, TimeoutError) as exc:
        raise DeployError(f"cannot fetch {url}: {exc}", stage="fetch") from exc
    raise DeployError(
        f"unsupported bundle URL scheme {parts.scheme!r}; use file, http or https", stage="fetch"
    )


def check_sha256(data: bytes, expected: str) -> str:
    """The sha256 of ``data``; :class:`DeployError` when it is not ``expected``."""
    digest = hashlib.sha256(data).hexdigest()
    if digest != expected:
        raise DeployError(
            f"sha256 mismatch: the command says {expected[:16]}…, the fetched bundle is {digest[:16]}… "
            "(tampered or truncated); nothing was installed",
            stage="verify",
            expected_sha256=expected,
            sha256=digest,
        )
    return digest


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
    """Run one window of :func:`selftest_audio` through a fresh backend; :class:`DeployError` if it fails.

    Passes when the backend runs, its readout has one channel per label, every readout value is finite,
    the decision rule gives a label, and the whole window took at most ``max_latency_ms``.
    """
    try:
        spikes = Frontend(spec).process(selftest_audio(spec, steps))[:steps]
        backend = make_backend()
        try:
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
        "finite": finite,
        "label": label,
        "input_spikes": int(spikes.sum()),
    }
    if problems:
        raise DeployError("health check failed: " + "; ".join(problems), stage="health", health=result)
    return result


EventFn = Callable[..., None]  # event(kind, level="info", **detail): logged and sent on the event topic


class Deployer:
    """The ``deploy`` and ``rollback`` commands: the new bundle is installed (or an old one reactivated),
    opened beside the running pipeline and health-checked, then swapped in; on any failure the store is
    put back as it was and the running pipeline never stops (docs/mqtt.md, "Commands on the device").

    ``open_pipeline()`` opens the store's active bundle, ``swap(pipeline)`` makes it the running one,
    ``event(kind, level, **detail)`` reports a lifecycle event.
    """

    def __init__(
        self,
        store: DeviceStore,
        config: RolloutConfig,
        *,
        open_pipeline: Callable[[], Pipeline],
        swap: Callable[[Pipeline], None],
        event: EventFn,
    ) -> None:
        self.store, self.config = store, config
        self._open, self._swap, self._event = open_pipeline, swap, event
        self._lock = threading.Lock()  # one deploy or rollback at a time

    def deploy(self, command: DeployCommand) -> dict[str, Any]:
        """Fetch, check, install, activate, health-check; roll back automatically if the check fails."""
        ref = command.bundle
        base = {
            "command_id": command.id,
            "rollout": command.rollout,
            "name": ref.name,
            "version": ref.version,
        }
        t0 = time.monotonic()
        with self._failures_reported("deploy.failed", base):
            data = fetch_bundle(
                ref, timeout_s=self.config.download_timeout_s, max_bytes=self.config.max_bundle_bytes
            )
            check_sha256(data, ref.sha256)
            with self._lock:
                pipeline, health, previous = self._install_and_check(data, ref, rollback=command.rollback)
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

    def rollback(self, to_version: str | None = None, *, command_id: str | None = None) -> dict[str, Any]:
        """Activate the previous (or a named installed) version, after the same health check."""
        base = {"command_id": command_id, "to_version": to_version}
        with self._failures_reported("rollback.failed", base), self._lock:
            before = (self.store.active(), self.store.previous())
            try:
                target = self._reactivate(to_version)
            except StoreError as exc:
                raise DeployError(str(exc), stage="rollback") from exc
            pipeline, health = self._check_active(before, reason_prefix=target.label)
            self._swap(pipeline)
        result = {
            **base,
            "result": "rolled back",
            "version": target.version,
            "from_version": before[0].version if before[0] else None,
            "health": health,
        }
        self._event("rollback", "warning", automatic=False, **result)
        self._event("bundle.activated", **pipeline.event_detail(), previous=result["from_version"])
        return result

    def _reactivate(self, to_version: str | None) -> InstalledBundle:
        """Make the previous version (or ``to_version``, which must be installed) the active one."""
        if to_version is None:
            return self.store.rollback()
        found = [b for b in self.store.installed() if b.version == to_version]
        if not found:
            have = ", ".join(b.version for b in self.store.installed()) or "none"
            raise StoreError(f"version {to_version} is not installed (installed: {have})")
        return self.store.install(found[-1].bundle_file, rollback=True)

    def _install_and_check(
        self, data: bytes, ref: BundleRef, *, rollback: bool
    ) -> tuple[Pipeline, dict[str, Any], str | None]:
        before = (self.store.active(), self.store.previous())
        previous = before[0].version if before[0] is not None else None
        fd, tmp_name = tempfile.mkstemp(dir=self.store.root, prefix=".deploy.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            installed = self.store.install(tmp_name, rollback=rollback)
        except StoreError as exc:
            raise DeployError(str(exc), stage="install", active=previous) from exc
        finally:
            os.unlink(tmp_name)
        if (installed.name, installed.version) != (ref.name, ref.version):
            self.store.revert(*before)
            raise DeployError(
                f"the bundle is {installed.label}, but the command names {ref.name}-{ref.version}",
                stage="verify",
                active=previous,
            )
        pipeline, health = self._check_active(before, reason_prefix=f"{installed.label}")
        return pipeline, health, previous

    def _check_active(
        self, before: tuple[InstalledBundle | None, InstalledBundle | None], reason_prefix: str
    ) -> tuple[Pipeline, dict[str, Any]]:
        """Open the (newly) active bundle and run the health check; on failure put ``before`` back."""
        pipeline: Pipeline | None = None
        try:
            pipeline = self._open()
            assert pipeline.factory is not None
            health = health_check(
                pipeline.factory,
                pipeline.frontend_spec,
                pipeline.labels,
                pipeline.steps,
                pipeline.rule,
                self.config.health_max_latency_ms,
            )
        except Exception as exc:
            if pipeline is not None:
                pipeline.close()
            self.store.revert(*before)
            back = before[0].version if before[0] is not None else None
            reason = str(exc) if isinstance(exc, DeployError) else f"cannot load it ({exc})"
            self._event(
                "rollback",
                "warning",
                automatic=True,
                from_version=reason_prefix,
                to_version=back,
                reason=reason,
            )
            detail = dict(exc.detail) if isinstance(exc, DeployError) else {}
            detail.update(stage=detail.get("stage", "load"), rolled_back=True, active=back)
            detail.pop("reason", None)
            raise DeployError(f"{reason_prefix}: {reason}; rolled back to {back}", **detail) from exc
        return pipeline, health

    @contextlib.contextmanager
    def _failures_reported(self, event: str, base: dict[str, Any]) -> Iterator[None]:
        """A :class:`DeployError` inside gets ``base`` in its detail and is reported as ``event``, then
        raised on (the command's ``command.failed`` carries the same detail)."""
        try:
            yield
        except DeployError as exc:
            exc.detail.update(base)
            self._event(event, "error", **exc.detail)
            raise
