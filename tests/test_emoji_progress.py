"""The first emoji rendering says what it does before the ~20 s of work; the cached load is
silent."""

from vaelab.data import emoji, load_dataset


def test_first_rendering_says_so_and_the_cached_load_is_quiet(tmp_path, monkeypatch, capsys):
    subset = ["\U0001f600", "\U0001f436", "\U0001f34e", "\u2600", "\U0001f680", "\U0001f1eb"]
    monkeypatch.setattr(emoji, "emoji_sequences", lambda path: subset)
    load_dataset("emoji", cache_dir=tmp_path, resize=(8, 8))
    err = capsys.readouterr().err
    assert "emoji: rendering 6 emoji of NotoColorEmoji.ttf at 8x8" in err
    assert len(err.strip().splitlines()) == 1  # one line (the bar shows only on a terminal)
    load_dataset("emoji", cache_dir=tmp_path, resize=(8, 8))
    assert "rendering" not in capsys.readouterr().err
