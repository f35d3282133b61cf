from __future__ import annotations

import textwrap
from typing import TYPE_CHECKING, Any

import pytest

from pycontainerd.config import ConfigError, load, loads
from pycontainerd.config import paths as config_paths
from pycontainerd.config.model import default_config

if TYPE_CHECKING:
    from pathlib import Path


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def load_error(path: Path) -> ConfigError:
    with pytest.raises(ConfigError) as excinfo:
        load(path, rootless=False)
    err = excinfo.value
    assert isinstance(err, ValueError)
    assert str(err).endswith(": invalid argument")
    return err


# --- loading and imports -------------------------------------------------------


def test_single_file(tmp_path: Path) -> None:
    main = write(
        tmp_path / "config.toml",
        """\
        version = 2
        root = "/srv/root"
        oom_score = -500
        disabled_plugins = ["io.containerd.snapshotter.v1.btrfs"]
        [grpc]
        address = "/tmp/x.sock"
        uid = 1000
        [debug]
        level = "debug"
        format = "json"
        """,
    )
    loaded = load(main, rootless=False)
    assert loaded.files == (main,)
    config = loaded.config
    assert config.root == "/srv/root"
    assert config.state == "/run/pycontainerd"  # default kept
    assert config.oom_score == -500
    assert config.disabled_plugins == ("io.containerd.snapshotter.v1.btrfs",)
    assert config.grpc.address == "/tmp/x.sock"
    assert config.grpc.uid == 1000
    assert config.effective_ttrpc.address == "/tmp/x.sock.ttrpc"
    assert config.effective_ttrpc.uid == 1000
    assert (config.debug.level, config.debug.format) == ("debug", "json")
    assert config.imports == ()


def test_imports_are_relative_to_the_importing_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    main = write(tmp_path / "etc" / "config.toml", 'version = 2\nimports = ["sub/extra.toml"]\n')
    extra = write(tmp_path / "etc" / "sub" / "extra.toml", 'imports = ["more.toml"]\nroot = "/r"\n')
    more = write(tmp_path / "etc" / "sub" / "more.toml", 'state = "/s"\n')
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    write(elsewhere / "sub" / "extra.toml", 'root = "/wrong"\n')
    monkeypatch.chdir(elsewhere)
    loaded = load(main, rootless=False)
    assert loaded.files == (main, extra, more)
    assert (loaded.config.root, loaded.config.state) == ("/r", "/s")
    assert loaded.config.imports == (str(extra), str(more))


def test_absolute_import(tmp_path: Path) -> None:
    other = write(tmp_path / "abs" / "other.toml", 'temp = "/t"\n')
    main = write(tmp_path / "config.toml", f'imports = ["{other}"]\n')
    assert load(main, rootless=False).config.temp == "/t"


def test_glob_imports_in_sorted_order(tmp_path: Path) -> None:
    main = write(tmp_path / "config.toml", 'imports = ["conf.d/*.toml", "none.d/*.toml"]\n')
    b = write(tmp_path / "conf.d" / "20-b.toml", 'root = "/b"\n')
    a = write(tmp_path / "conf.d" / "10-a.toml", 'root = "/a"\nstate = "/a-state"\n')
    write(tmp_path / "conf.d" / "ignored.txt", 'root = "/txt"\n')
    loaded = load(main, rootless=False)
    assert loaded.files == (main, a, b)
    assert loaded.config.root == "/b"  # later file wins
    assert loaded.config.state == "/a-state"


def test_breadth_first_and_later_files_win(tmp_path: Path) -> None:
    # main -> a, b ; a -> c.  Breadth-first: main, a, b, c.
    main = write(tmp_path / "config.toml", 'imports = ["a.toml", "b.toml"]\nroot = "/main"\n')
    a = write(tmp_path / "a.toml", 'imports = ["c.toml"]\nroot = "/a"\nstate = "/a"\ntemp = "/a"\n')
    b = write(tmp_path / "b.toml", 'root = "/b"\nstate = "/b"\n')
    c = write(tmp_path / "c.toml", 'root = "/c"\n')
    loaded = load(main, rootless=False)
    assert loaded.files == (main, a, b, c)
    # imported files override their importer; among them the later one wins
    assert loaded.config.root == "/c"
    assert loaded.config.state == "/b"
    assert loaded.config.temp == "/a"


def test_each_file_is_read_once(tmp_path: Path) -> None:
    # A diamond is not a cycle: c is imported twice and read once.
    main = write(tmp_path / "config.toml", 'imports = ["a.toml", "b.toml", "./a.toml"]\n')
    a = write(tmp_path / "a.toml", 'imports = ["c.toml"]\n')
    b = write(tmp_path / "b.toml", 'imports = ["c.toml"]\n')
    c = write(tmp_path / "c.toml", "oom_score = 5\n")
    loaded = load(main, rootless=False)
    assert loaded.files == (main, a, b, c)
    assert loaded.config.oom_score == 5


def test_plugin_tables_merge_key_by_key(tmp_path: Path) -> None:
    main = write(
        tmp_path / "config.toml",
        """\
        version = 2
        imports = ["extra.toml"]
        disabled_plugins = ["io.containerd.snapshotter.v1.btrfs"]
        [plugins."io.containerd.grpc.v1.cri"]
        sandbox_image = "pause:3.9"
        [plugins."io.containerd.grpc.v1.cri".containerd]
        snapshotter = "overlayfs"
        default_runtime_name = "runc"
        [plugins."io.containerd.gc.v1.scheduler"]
        pause_threshold = 0.02
        """,
    )
    write(
        tmp_path / "extra.toml",
        """\
        disabled_plugins = ["io.containerd.snapshotter.v1.zfs"]
        [plugins."io.containerd.grpc.v1.cri".containerd]
        snapshotter = "native"
        [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
        runtime_type = "io.containerd.runc.v2"
        """,
    )
    config = load(main, rootless=False).config
    assert dict(config.plugins) == {
        "io.containerd.grpc.v1.cri": {
            "sandbox_image": "pause:3.9",
            "containerd": {
                "snapshotter": "native",
                "default_runtime_name": "runc",
                "runtimes": {"runc": {"runtime_type": "io.containerd.runc.v2"}},
            },
        },
        "io.containerd.gc.v1.scheduler": {"pause_threshold": 0.02},
    }
    # arrays are replaced, not appended
    assert config.disabled_plugins == ("io.containerd.snapshotter.v1.zfs",)


def test_plugin_defaults_lie_under_the_files(tmp_path: Path) -> None:
    main = write(
        tmp_path / "config.toml",
        '[plugins."io.containerd.gc.v1.scheduler"]\ndeletion_threshold = 5\n',
    )
    defaults: dict[str, dict[str, Any]] = {
        "io.containerd.gc.v1.scheduler": {"pause_threshold": 0.02, "deletion_threshold": 0},
        "io.containerd.internal.v1.opt": {"path": "/opt/x"},
    }
    config = load(main, rootless=False, plugin_defaults=defaults).config
    assert config.plugins["io.containerd.gc.v1.scheduler"] == {
        "pause_threshold": 0.02,
        "deletion_threshold": 5,
    }
    assert config.plugins["io.containerd.internal.v1.opt"] == {"path": "/opt/x"}
    assert config.plugin_config("io.containerd.nope.v1.x", {"a": 1}) == {"a": 1}
    assert config.plugin_config("io.containerd.gc.v1.scheduler", {"x": 1})["x"] == 1


def test_timeouts_and_named_tables(tmp_path: Path) -> None:
    main = write(
        tmp_path / "config.toml",
        """\
        [timeouts]
        "io.containerd.timeout.shim.load" = "1m30s"
        [proxy_plugins.stargz]
        type = "snapshot"
        address = "/run/stargz.sock"
        exports = { root = "/var/lib/stargz" }
        capabilities = ["remote"]
        [stream_processors."io.containerd.ocicrypt.decoder.v1.tar"]
        accepts = ["application/vnd.oci.image.layer.v1.tar+encrypted"]
        returns = "application/vnd.oci.image.layer.v1.tar"
        path = "ctd-decoder"
        args = ["--decryption-keys-path", "/keys"]
        """,
    )
    config = load(main, rootless=False).config
    assert config.timeout("io.containerd.timeout.shim.load") == 90.0
    assert config.timeouts["io.containerd.timeout.shim.cleanup"] == "5s"  # default kept
    proxy = config.proxy_plugins["stargz"]
    assert (proxy.type, proxy.address, proxy.platform) == ("snapshot", "/run/stargz.sock", "")
    assert dict(proxy.exports) == {"root": "/var/lib/stargz"}
    assert proxy.capabilities == ("remote",)
    sp = config.stream_processors["io.containerd.ocicrypt.decoder.v1.tar"]
    assert sp.path == "ctd-decoder"
    assert sp.args == ("--decryption-keys-path", "/keys")


def test_no_path_and_no_default_file_gives_defaults(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(config_paths, "default_config_path", lambda _r=None: str(tmp_path / "no"))
    loaded = load(None, rootless=False)
    assert loaded.files == ()
    assert loaded.config == default_config(rootless=False)


def test_no_path_reads_the_default_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    default = write(tmp_path / "config.toml", 'root = "/from-default"\n')
    monkeypatch.setattr(config_paths, "default_config_path", lambda _r=None: str(default))
    loaded = load(None, rootless=False)
    assert loaded.files == (default,)
    assert loaded.config.root == "/from-default"


def test_loads_string() -> None:
    config = loads('version = 2\nroot = "/x"\n', rootless=False)
    assert config.root == "/x"
    with pytest.raises(ConfigError, match=r"^inline\.toml: root: expected a string, got 1"):
        loads("root = 1", name="inline.toml", rootless=False)


# --- bad input: each names the file and the key -------------------------------


def test_unknown_top_level_key(tmp_path: Path) -> None:
    main = write(tmp_path / "config.toml", 'version = 2\nrooot = "/x"\n')
    err = load_error(main)
    assert (err.file, err.key) == (str(main), "rooot")
    assert str(err) == f"{main}: rooot: unknown key: invalid argument"


def test_unknown_key_in_a_section(tmp_path: Path) -> None:
    main = write(tmp_path / "config.toml", "[grpc]\nmax_message_size = 5\n")
    err = load_error(main)
    assert err.key == "grpc.max_message_size"
    assert "unknown key" in str(err)


@pytest.mark.parametrize(
    ("toml", "key", "problem"),
    [
        ("root = 1", "root", "expected a string, got 1"),
        ('[grpc]\nuid = "abc"', "grpc.uid", 'expected an integer, got "abc"'),
        ("[grpc]\nuid = true", "grpc.uid", "expected an integer, got true"),
        ("[grpc]\nuid = -1", "grpc.uid", "-1 is out of range [0, 4294967295]"),
        ("oom_score = 2000", "oom_score", "2000 is out of range [-1000, 1000]"),
        ("[grpc]\nmax_concurrent_streams = 0", "grpc.max_concurrent_streams", "0 is out of range"),
        ("[grpc]\nmax_connections = -5", "grpc.max_connections", "-5 is out of range"),
        ("[grpc]\nidle_timeout = 1.5", "grpc.idle_timeout", "expected an integer, got 1.5"),
        ("[grpc]\nhandshake_timeout = 100000", "grpc.handshake_timeout", "out of range"),
        ("[grpc]\nmax_header_list_size = 100", "grpc.max_header_list_size", "out of range"),
        ('[metrics]\ngrpc_histogram = "yes"', "metrics.grpc_histogram", "expected a boolean"),
        ('disabled_plugins = "io.containerd.x.v1.y"', "disabled_plugins", "expected an array"),
        ("imports = [1]", "imports[0]", "expected a string, got 1"),
        ('grpc = "x"', "grpc", 'expected a table, got "x"'),
        ('[grpc]\naddress = ""', "grpc.address", "grpc address cannot be empty"),
        ('[debug]\nlevel = "loud"', "debug.level", 'not a valid log level: "loud"'),
        ('[debug]\nformat = "xml"', "debug.format", 'unknown log format: "xml"'),
        (
            '[timeouts]\n"io.containerd.timeout.shim.load" = "5"',
            'timeouts."io.containerd.timeout.shim.load"',
            'missing unit in duration "5"',
        ),
        (
            '[timeouts]\n"io.containerd.timeout.shim.load" = 5',
            'timeouts."io.containerd.timeout.shim.load"',
            "expected a duration string",
        ),
        (
            "[timeouts]\nio.containerd.timeout.shim.load = '5s'",
            "timeouts.io",
            "quote dotted names",
        ),
        (
            '[plugins."io.containerd.gc.v1.scheduler"]\n[plugins."io.containerd.gc.v1.x"]\n'
            "[proxy_plugins.p]\naddress = '/s'",
            "proxy_plugins.p.type",
            "a proxy plugin needs a type",
        ),
        ("[proxy_plugins.p]\ntype = 'snapshot'", "proxy_plugins.p.address", "needs an address"),
        (
            "[proxy_plugins.p]\ntype = 'snapshot'\naddress = '/s'\nexports = { a = 1 }",
            "proxy_plugins.p.exports.a",
            "expected a string, got 1",
        ),
        ("[stream_processors.s]\npath = 1", "stream_processors.s.path", "expected a string"),
        (
            '[plugins]\n"io.containerd.gc.v1.scheduler" = 1',
            'plugins."io.containerd.gc.v1.scheduler"',
            "expected a table, got 1",
        ),
    ],
)
def test_wrong_type_or_value(tmp_path: Path, toml: str, key: str, problem: str) -> None:
    main = write(tmp_path / "config.toml", toml + "\n")
    err = load_error(main)
    assert err.file == str(main)
    assert err.key == key
    assert problem in err.problem
    assert str(err).startswith(f"{main}: {key}: ")


@pytest.mark.parametrize(
    ("toml", "key", "message"),
    [
        (
            'disabled_plugins = ["io.containerd.snapshotter.v1.zfs", "cri"]',
            "disabled_plugins[1]",
            'invalid disabled plugin URI "cri" expect io.containerd.x.vx',
        ),
        (
            'required_plugins = ["io.containerd.grpc"]',
            "required_plugins[0]",
            'invalid required plugin URI "io.containerd.grpc" expect io.containerd.x.vx',
        ),
        (
            "[plugins.cri]\nx = 1",
            "plugins.cri",
            'invalid plugin key URI "cri" expect io.containerd.x.vx',
        ),
        (
            '[plugins."org.example.v1.x"]',
            'plugins."org.example.v1.x"',
            'invalid plugin key URI "org.example.v1.x" expect io.containerd.x.vx',
        ),
    ],
)
def test_bad_plugin_uri(tmp_path: Path, toml: str, key: str, message: str) -> None:
    main = write(tmp_path / "config.toml", "version = 2\n" + toml + "\n")
    err = load_error(main)
    assert str(err) == f"{main}: {key}: {message}: invalid argument"


def test_unquoted_plugin_uri_gets_a_hint(tmp_path: Path) -> None:
    main = write(tmp_path / "config.toml", "[plugins.io.containerd.gc.v1.scheduler]\nx = 1\n")
    err = load_error(main)
    assert err.key == "plugins.io"
    assert '[plugins."io.containerd.<type>.<version>.<id>"]' in err.problem


def test_errors_in_an_imported_file_name_that_file(tmp_path: Path) -> None:
    main = write(tmp_path / "config.toml", 'imports = ["conf.d/bad.toml"]\n')
    bad = write(tmp_path / "conf.d" / "bad.toml", 'disabled_plugins = ["cri"]\n')
    err = load_error(main)
    assert err.file == str(bad)
    assert err.key == "disabled_plugins[0]"


def test_missing_import_file(tmp_path: Path) -> None:
    main = write(tmp_path / "config.toml", 'imports = ["here.toml", "gone.toml"]\n')
    write(tmp_path / "here.toml", "")
    err = load_error(main)
    assert err.file == str(main)
    assert err.key == "imports[1]"
    assert err.problem == f'imported file "{tmp_path / "gone.toml"}" not found'


def test_missing_import_in_an_imported_file(tmp_path: Path) -> None:
    main = write(tmp_path / "config.toml", 'imports = ["a.toml"]\n')
    a = write(tmp_path / "a.toml", 'imports = ["gone.toml"]\n')
    err = load_error(main)
    assert (err.file, err.key) == (str(a), "imports[0]")


def test_import_cycle_back_to_the_main_file(tmp_path: Path) -> None:
    main = write(tmp_path / "config.toml", 'imports = ["a.toml"]\n')
    a = write(tmp_path / "a.toml", 'imports = ["b.toml"]\n')
    b = write(tmp_path / "b.toml", 'imports = ["config.toml"]\n')
    err = load_error(main)
    assert (err.file, err.key) == (str(b), "imports[0]")
    assert err.problem == f"import cycle: {main} -> {a} -> {b} -> {tmp_path / 'config.toml'}"


def test_file_importing_itself(tmp_path: Path) -> None:
    main = write(tmp_path / "config.toml", 'imports = ["*.toml"]\n')
    err = load_error(main)
    assert (err.file, err.key) == (str(main), "imports[0]")
    assert err.problem.startswith("import cycle: ")


def test_cycle_among_imported_files(tmp_path: Path) -> None:
    # main -> a, b; a -> b; b -> a.  Breadth-first reading never meets an
    # ancestor on the way, yet a and b import each other.
    main = write(tmp_path / "config.toml", 'imports = ["a.toml", "b.toml"]\n')
    a = write(tmp_path / "a.toml", 'imports = ["b.toml"]\n')
    b = write(tmp_path / "b.toml", 'imports = ["a.toml"]\n')
    err = load_error(main)
    assert (err.file, err.key) == (str(b), "imports[0]")
    assert err.problem == f"import cycle: {a} -> {b} -> {a}"


@pytest.mark.parametrize(
    ("version", "problem"),
    [
        ("3", "unsupported config version 3, expected 2"),
        ("0", "unsupported config version 0, expected 2"),
        ('"2"', 'expected an integer, got "2"'),
        ("1", "version 1 configs are not supported: set version = 2"),
    ],
)
def test_unknown_version(tmp_path: Path, version: str, problem: str) -> None:
    main = write(tmp_path / "config.toml", f"version = {version}\n")
    err = load_error(main)
    assert (err.file, err.key) == (str(main), "version")
    assert err.problem.startswith(problem)


def test_version_in_an_imported_file_is_checked(tmp_path: Path) -> None:
    main = write(tmp_path / "config.toml", 'version = 2\nimports = ["old.toml"]\n')
    old = write(tmp_path / "old.toml", "version = 1\n")
    err = load_error(main)
    assert (err.file, err.key) == (str(old), "version")


def test_missing_main_file(tmp_path: Path) -> None:
    err = load_error(tmp_path / "nope.toml")
    assert str(err) == f"{tmp_path / 'nope.toml'}: no such file: invalid argument"


def test_invalid_toml(tmp_path: Path) -> None:
    main = write(tmp_path / "config.toml", "root = \n")
    err = load_error(main)
    assert err.file == str(main)
    assert err.problem.startswith("invalid TOML: ")
    assert "line 1" in err.problem


def test_directory_instead_of_file(tmp_path: Path) -> None:
    err = load_error(tmp_path)
    assert err.problem == "is a directory, not a config file"
