"""``containerd oci-hook``: template a hook's arguments and environment, then exec it.

Used as an OCI hook whose ``path`` is the containerd binary and whose args are
``containerd oci-hook -- <real hook> <args…>``. The runtime writes the OCI
state JSON on stdin; ``<bundle>/config.json`` supplies the root path. Every
argument and every environment variable may use the template functions
``{{id}}``, ``{{pid}}``, ``{{rootfs}}``, ``{{bundle}}``, ``{{status}}`` and
``{{annotation "key"}}`` (the same set as upstream's Go template). The real
hook is exec'ed by path, without a ``PATH`` lookup.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

TEMPLATE_NAME: Final = "oci-hook"


class OciHookError(Exception):
    """A template or input problem; ``containerd: <str>`` is printed."""


@dataclass(frozen=True, slots=True)
class HookState:
    """The fields of the OCI state the templates can use, plus the resolved rootfs."""

    id: str = ""
    pid: int = 0
    bundle: str = ""
    status: str = ""
    rootfs: str = ""
    annotations: Mapping[str, str] = field(default_factory=dict)


def _os_error_text(exc: OSError, what: str) -> str:
    reason = (exc.strerror or str(exc)).lower()
    return f"{what}: {reason}" if what else reason


def load_state(stdin: bytes) -> HookState:
    """Parse the OCI state JSON and read ``<bundle>/config.json`` for the rootfs.

    Raises:
        OciHookError: bad JSON, or ``config.json`` cannot be read.
    """
    try:
        raw = json.loads(stdin or b"{}")
    except ValueError as exc:
        msg = f"invalid OCI state on stdin: {exc}"
        raise OciHookError(msg) from exc
    if not isinstance(raw, dict):
        msg = "invalid OCI state on stdin: not a JSON object"
        raise OciHookError(msg)
    bundle = str(raw.get("bundle") or "")
    config_path = os.path.join(bundle, "config.json")
    try:
        with open(config_path, "rb") as fh:
            spec = json.load(fh)
    except OSError as exc:
        raise OciHookError(_os_error_text(exc, f"open {config_path}")) from exc
    except ValueError as exc:
        msg = f"invalid {config_path}: {exc}"
        raise OciHookError(msg) from exc
    root = spec.get("root") if isinstance(spec, dict) else None
    root_path = str(root.get("path") or "") if isinstance(root, dict) else ""
    rootfs = root_path if os.path.isabs(root_path) else os.path.join(bundle, root_path)
    annotations = raw.get("annotations") or {}
    return HookState(
        id=str(raw.get("id") or ""),
        pid=int(raw.get("pid") or 0),
        bundle=bundle,
        status=str(raw.get("status") or ""),
        rootfs=rootfs,
        annotations={str(k): str(v) for k, v in dict(annotations).items()},
    )


_ACTION: Final = re.compile(r"\{\{(.*?)\}\}", re.DOTALL)
_TOKEN: Final = re.compile(r'\s*(?:([A-Za-z_][A-Za-z0-9_]*)|("(?:[^"\\\n]|\\.)*")|(`[^`]*`)|(\S+))')


def _functions(state: HookState) -> dict[str, Callable[..., str]]:
    return {
        "id": lambda: state.id,
        "pid": lambda: str(state.pid),
        "rootfs": lambda: state.rootfs,
        "bundle": lambda: state.bundle,
        "status": lambda: state.status,
        "annotation": lambda key: state.annotations.get(key, ""),
    }


def _unquote(token: str) -> str:
    if token.startswith("`"):
        return token[1:-1]
    # A Go interpreted string literal reads the same as a JSON string for the cases hooks use.
    try:
        value = json.loads(token)
    except ValueError as exc:
        msg = f"bad string literal {token}"
        raise ValueError(msg) from exc
    return str(value)


def _tokenize(body: str, where: str) -> list[tuple[str, str]]:
    tokens: list[tuple[str, str]] = []
    pos = 0
    body = body.strip()
    while pos < len(body):
        m = _TOKEN.match(body, pos)
        if m is None or m.end() == pos:
            break
        pos = m.end()
        ident, dquoted, raw, other = m.groups()
        if ident is not None:
            tokens.append(("ident", ident))
        elif dquoted is not None or raw is not None:
            try:
                tokens.append(("string", _unquote(dquoted or raw)))
            except ValueError as exc:
                msg = f"{where}: {exc}"
                raise OciHookError(msg) from exc
        else:
            msg = f"{where}: unexpected {other!r} in command"
            raise OciHookError(msg)
    return tokens


def render(text: str, state: HookState) -> str:
    """Expand the template functions in ``text``.

    Raises:
        OciHookError: an unknown function (``template: oci-hook:1: function "x"
            not defined``), a wrong number of arguments or an unclosed action.
    """
    funcs = _functions(state)
    out: list[str] = []
    pos = 0
    for m in _ACTION.finditer(text):
        out.append(text[pos : m.start()])
        pos = m.end()
        line = text.count("\n", 0, m.start()) + 1
        where = f"template: {TEMPLATE_NAME}:{line}"
        tokens = _tokenize(m.group(1), where)
        if not tokens:
            msg = f"{where}: missing value for command"
            raise OciHookError(msg)
        kind, name = tokens[0]
        if kind != "ident":
            out.append(name if len(tokens) == 1 else "")
            continue
        func = funcs.get(name)
        if func is None:
            msg = f'{where}: function "{name}" not defined'
            raise OciHookError(msg)
        args = [value for _, value in tokens[1:]]
        want = 1 if name == "annotation" else 0
        if len(args) != want:
            msg = (
                f"{where}: executing {go_name(TEMPLATE_NAME)} at <{name}>: "
                f"wrong number of args for {name}: want {want} got {len(args)}"
            )
            raise OciHookError(msg)
        out.append(func(*args))
    rest = text[pos:]
    if "{{" in rest:
        line = text.count("\n", 0, pos + rest.index("{{")) + 1
        msg = f"template: {TEMPLATE_NAME}:{line}: unclosed action"
        raise OciHookError(msg)
    out.append(rest)
    return "".join(out)


def go_name(name: str) -> str:
    """``"name"`` in Go's quoting, for messages."""
    return json.dumps(name)


def prepare(
    args: Sequence[str], stdin: bytes, environ: Mapping[str, str]
) -> tuple[list[str], dict[str, str]]:
    """The rendered argv and environment for the hook, without exec'ing.

    Raises:
        OciHookError: no hook given, bad input or a bad template.
    """
    if not args:
        msg = "no hook command given: usage: containerd oci-hook -- <hook> [args...]"
        raise OciHookError(msg)
    state = load_state(stdin)
    argv = [render(a, state) for a in args]
    env: dict[str, str] = {}
    for key, value in environ.items():
        entry = render(f"{key}={value}", state)
        k, _, v = entry.partition("=")
        env[k] = v
    return argv, env


def run_hook(args: Sequence[str], stdin: bytes) -> None:
    """Render and exec the hook; only returns by raising.

    Raises:
        OciHookError: see :func:`prepare`, or the exec failed (Go's wording:
            ``no such file or directory``).
    """
    argv, env = prepare(args, stdin, os.environ)
    try:
        os.execve(argv[0], argv, env)  # noqa: S606 - exec of the hook is the point
    except OSError as exc:
        raise OciHookError(_os_error_text(exc, "")) from exc
