"""packaging/vendor.py: what the packages vendor is what pyproject.toml's requirements reach for the
release's Python, less what Debian provides or nobody imports; and tests/pkgsmoke.py refuses a
command it cannot run rather than passing it by."""

from __future__ import annotations

import importlib.util
import sys

import pytest

from conftest import REPO

import pkgsmoke


def load_vendor():
    spec = importlib.util.spec_from_file_location("vendor", REPO / "packaging/vendor.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("vendor", mod)
    spec.loader.exec_module(mod)
    return mod


vendor = load_vendor()


def item(name: str, version: str, *requires: str) -> dict:
    """A distribution as pip's installation report gives it."""
    return {"metadata": {"name": name, "version": version, "requires_dist": list(requires)}}


RESOLVED = {
    "sqlalchemy": item("SQLAlchemy", "2.0.59", "typing-extensions>=4.6.0",
                       'greenlet>=1; platform_machine == "x86_64"', 'greenlet>=1; extra == "asyncio"'),
    "typing-extensions": item("typing_extensions", "4.16.0"),
    "greenlet": item("greenlet", "3.5.6"),
    "mako": item("Mako", "1.4.3", "MarkupSafe>=2.0"),
    "alembic": item("alembic", "1.20.1", "SQLAlchemy>=2.0", "Mako", 'tomli; python_version < "3.12"'),
    "tomli": item("tomli", "2.3.0"),
    "cryptography": item("cryptography", "51.0.1", "cffi>=2"),
    "cffi": item("cffi", "2.1.1"),
    "pyarrow": item("pyarrow", "26.0.1"),
}
DEBIAN = {"cryptography": "python3-cryptography", "markupsafe": "python3-markupsafe"}
NOT_SHIPPED = {"greenlet": "asyncio only"}


@pytest.mark.parametrize("python,tomli", [("3.11", True), ("3.13", False)])
def test_walk_follows_the_releases_markers(python, tomli):
    """Requirements are followed with the release's markers (tomli only below 3.12); a
    from-debian distribution becomes a Depends floor and its own requirements (cffi) are not
    followed; a not-shipped one (greenlet) is left out; extras are never followed."""
    env = vendor.marker_env({"python": python}, "amd64")
    names, from_debian = vendor.walk(["SQLAlchemy>=2.0,<2.1", "alembic>=1.12", "cryptography>=38"], RESOLVED,
                                     env, DEBIAN, NOT_SHIPPED)
    assert names == ["sqlalchemy", "alembic", "typing-extensions", "mako"] + (["tomli"] if tomli else [])
    assert {n: vendor._floor(s) for n, s in from_debian.items()} == {"cryptography": ">= 38",
                                                                       "markupsafe": ">= 2.0"}


def test_walk_of_the_lake_stops_at_what_the_base_vendors():
    """The lake package gets what its extra reaches beyond the base package's set."""
    env = vendor.marker_env({"python": "3.13"}, "amd64")
    names, _ = vendor.walk(["pyarrow>=14", "SQLAlchemy"], RESOLVED, env, DEBIAN, NOT_SHIPPED,
                           stop={"sqlalchemy", "typing-extensions"})
    assert names == ["pyarrow"]


def test_walk_refuses_a_requirement_pip_did_not_resolve():
    """A requirement the release's markers need but pip's resolution lacks is an error naming it."""
    env = vendor.marker_env({"python": "3.13"}, "amd64")
    with pytest.raises(vendor.VendorError, match="zstandard"):
        vendor.walk(["pyarrow", 'zstandard; python_version >= "3.13"'], RESOLVED, env, DEBIAN, NOT_SHIPPED)


def test_manylinux_tags_stop_at_the_releases_glibc():
    """A release loads manylinux wheels up to its own glibc, never newer."""
    tags = vendor.platforms({"glibc": "2.36"}, "amd64")
    assert tags[0] == "manylinux_2_36_x86_64" and "manylinux_2_37_x86_64" not in tags
    assert "manylinux_2_17_x86_64" in tags and "manylinux2014_x86_64" in tags


def test_smoke_refuses_a_command_it_cannot_guess_arguments_for(tmp_path):
    """A shipped command with a required argument the smoke has no step for fails the smoke,
    naming the command, instead of passing unrun."""
    smoke = object.__new__(pkgsmoke.Smoke)
    smoke.work, smoke.ran = tmp_path, {}
    smoke.commands = {"hunt": [{"flags": [], "dest": "rules", "required": True, "choices": None},
                               {"flags": ["--db-dir"], "dest": "db_dir", "required": False, "choices": None}]}
    with pytest.raises(pkgsmoke.SmokeFailure, match=r"auditd-lite hunt needs rules"):
        smoke.generic("hunt", tmp_path)
