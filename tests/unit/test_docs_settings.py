"""docs/settings.md must document every DJANGO_RAY key with its real default."""

from pathlib import Path

from django_ray.conf import SETTINGS

DOC = (Path(__file__).resolve().parents[2] / "docs" / "settings.md").read_text()


def test_every_setting_is_documented_with_its_default():
    for key, spec in SETTINGS.items():
        row = next((line for line in DOC.splitlines() if line.startswith(f"| `{key}` |")), None)
        assert row is not None, f"{key} missing from docs/settings.md"
        assert f"`{spec.default!r}`" in row, (
            f"{key}: documented default differs from {spec.default!r}"
        )


def test_no_undocumented_extra_rows():
    documented = {
        line.split("`")[1] for line in DOC.splitlines() if line.startswith("| `") and "_" in line
    }
    assert {k for k in documented if k.isupper()} - set(SETTINGS) <= set()
