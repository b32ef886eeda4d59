"""The Gradio app end to end: a real server on a free local port, driven through ``gradio_client``.

A tiny model is trained, evaluated and exported once per test session, and the synthetic test split
is indexed into a gallery with the run's pair scores attached; every API answer is compared with the
same quantity computed directly from the bundle, the gallery and the pair-scores file.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import pytest
from conftest import http_status, tiny_overrides

gradio_client = pytest.importorskip("gradio_client", reason="the app tests need gradio_client (requirements.txt)")

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # app.py lives at the repository root, outside the package

import app  # noqa: E402  (needs the repository root on the path)
import disncl.app as logic  # noqa: E402
from disncl.serve.bundle import Bundle  # noqa: E402
from disncl.serve.gallery import Gallery  # noqa: E402
from disncl.serve.pair_scores import PairScores, plain_float  # noqa: E402

# Gradio 6's queue calls pandas options that pandas 3 deprecates; noise from the library, not this app.
pytestmark = [
    pytest.mark.filterwarnings("ignore:'future.no_silent_downcasting' is deprecated"),
    pytest.mark.filterwarnings("ignore:The copy keyword is deprecated"),
]
K = 4  # a third of the 12-image gallery: enough to compare rankings, fewer than all images


@dataclass(frozen=True)
class Assets:
    """What the app serves in the tests: a bundle, a gallery over the test split, and the run they came from."""

    run: Path
    bundle: Path
    gallery: Path
    data: Path


@functools.cache
def build_assets(data: Path, out: Path) -> Assets:
    """Train, evaluate and export a tiny model, and index the synthetic test split.

    Cached, so the browser test module, which imports the ``assets`` fixture, reuses the same files.
    """
    from disncl.config import load_config
    from disncl.export import export_bundle
    from disncl.serve.index_cli import collect_items
    from disncl.train.evaluate import evaluate_run
    from disncl.train.loop import train

    run = train(load_config(None, tiny_overrides(data, out / "run")), progress=False)
    evaluate_run(run, "best", detection=False, progress=False)
    bundle_dir = out / "bundle"
    export_bundle(run / "best", bundle_dir, progress=False)
    items = collect_items(None, data / "test.csv")
    gallery = Gallery.build(
        Bundle.load(bundle_dir), items.root, items.image_paths, items.captions, items.caption_image, progress=False
    )
    gallery.save(out / "gallery", pair_scores=run / "pair_scores.csv")
    return Assets(run=run, bundle=bundle_dir, gallery=out / "gallery", data=data)


@pytest.fixture(scope="session")
def assets(tiny_synth: Path, tmp_path_factory: pytest.TempPathFactory) -> Assets:
    # A fixed folder under the session's temp root: every module using this fixture hits the cache.
    return build_assets(tiny_synth, tmp_path_factory.getbasetemp() / "app-assets")


@dataclass(frozen=True)
class Served:
    url: str
    client: gradio_client.Client
    services: logic.Services


@pytest.fixture(scope="module")
def served(assets: Assets) -> Iterator[Served]:
    services = logic.Services.load(assets.bundle, assets.gallery)
    demo = app.build_app(services)
    _, url, _ = app.launch(demo, services, port=None, prevent_thread_lock=True, quiet=True)
    try:
        yield Served(url=url, client=gradio_client.Client(url, verbose=False), services=services)
    finally:
        demo.close()


def _rows(table: dict) -> list[list]:
    """The data rows of a Dataframe value as returned by gradio_client."""
    return table["data"]


def test_every_endpoint_has_a_stable_name(served: Served) -> None:
    api = served.client.view_api(return_format="dict", print_info=False)
    assert sorted(api["named_endpoints"]) == sorted([
        "/explain_pair", "/explorer", "/export_flagged", "/flag_threshold", "/gallery_page", "/inspect_pair",
        "/model_card", "/near_duplicates", "/review_decide", "/review_queue", "/export_review",
        "/search_image", "/search_text", "/embedding_map", "/map_pick",
    ])
    assert not api["unnamed_endpoints"]


def test_text_search_equals_direct_search(served: Served) -> None:
    services = served.services
    gallery = services.gallery
    caption = gallery.captions[7]
    notice, mii_tiles, full_tiles, table = served.client.predict(caption, K, api_name="/search_text")
    assert notice == ""  # a gallery caption has no word the model does not know
    query = services.bundle.encode_texts([caption])
    rows = _rows(table)
    for space in logic.SPACES:
        scores, ids = gallery.search_images(getattr(query, space), space, K)
        got = [r for r in rows if r[0] == space]
        assert [r[2] for r in got] == ids[0].tolist()
        np.testing.assert_allclose([r[3] for r in got], scores[0], atol=1e-4)
        assert [r[1] for r in got] == list(range(1, K + 1))
    assert len(mii_tiles) == len(full_tiles) == K
    # The rank under the other space is the exact rank over the whole gallery.
    full_sims = gallery.embedding("image", "full") @ query.full[0]
    first = next(r for r in rows if r[0] == "mii")
    assert first[4] == int((full_sims > full_sims[first[2]]).sum()) + 1


def test_image_search_by_upload_and_by_gallery_index_agree_with_direct_search(served: Served) -> None:
    services = served.services
    gallery = services.gallery
    path = gallery.image_path(3)
    by_upload = served.client.predict(gradio_client.handle_file(str(path)), None, K, api_name="/search_image")
    by_index = served.client.predict(None, 3, K, api_name="/search_image")
    encoded = services.bundle.encode_images([path])
    for space, up, ix in zip(logic.SPACES, by_upload, by_index, strict=True):
        scores, ids = gallery.search_captions(getattr(encoded, space), space, K)
        assert [r[3] for r in _rows(up)] == ids[0].tolist()
        np.testing.assert_allclose([r[1] for r in _rows(up)], scores[0], atol=1e-4)
        # The stored embedding of gallery image 3 is the same image encoded at indexing time.
        assert [r[3] for r in _rows(ix)] == ids[0].tolist()
        owners = gallery.caption_image
        assert [r[5] for r in _rows(ix)] == ["yes" if owners[c] == 3 else "no" for c in ids[0]]


def _soft_match(gallery_sims: np.ndarray, own: float, tau: float, append: bool) -> float:
    logits = np.append(gallery_sims, own) if append else gallery_sims
    weights = np.exp((logits - logits.max()) / tau)
    return float(np.exp((own - logits.max()) / tau) / weights.sum())


@pytest.mark.parametrize("source", ["gallery", "upload"])
def test_pair_inspector_values_equal_direct_computation(served: Served, source: str) -> None:
    services = served.services
    gallery = services.gallery
    image_index, caption = 5, gallery.captions[11]
    path = gallery.image_path(image_index)
    args = (None, image_index) if source == "gallery" else (gradio_client.handle_file(str(path)), None)
    summary, values, best_captions, best_images = served.client.predict(
        *args, caption, 3, api_name="/inspect_pair"
    )
    image = services.bundle.encode_images([path])
    text = services.bundle.encode_texts([caption])
    mii = float(image.mii[0] @ text.mii[0])
    full = float(image.full[0] @ text.full[0])
    sims = gallery.embedding("image", "mii") @ text.mii[0]
    tau = logic.manifest_tau(services.bundle.manifest)
    assert tau == 0.07  # the tiny run trains with the default temperature, recorded in the manifest
    expected = _soft_match(sims, mii, tau, append=source == "upload")
    assert values["soft_match_score"] == pytest.approx(expected, abs=1e-5)
    assert values["mii_similarity"] == pytest.approx(mii, abs=1e-5)
    assert values["full_similarity"] == pytest.approx(full, abs=1e-5)
    assert values["exclusive_contribution"] == pytest.approx(full - mii, abs=1e-5)
    assert values["candidate_images"] == gallery.n_images + (source == "upload")
    assert "soft match score" in summary
    _, ids = gallery.search_captions(image.mii, "mii", 3)
    assert [r[3] for r in _rows(best_captions)] == ids[0].tolist()
    assert len(best_images) == 3


def test_soft_match_score_is_a_probability_over_the_candidates() -> None:
    sims = np.array([0.1, 0.5, -0.2])
    total = sum(logic.soft_match_score(sims, float(s), 0.07, own_in_gallery=True) for s in sims)
    assert total == pytest.approx(1.0)
    # A tiny temperature must not overflow: the best candidate takes all the mass.
    assert logic.soft_match_score(sims, 0.5, 1e-4, own_in_gallery=True) == pytest.approx(1.0)


def test_explorer_flags_pairs_at_a_threshold(served: Served, assets: Assets) -> None:
    scores = PairScores.read(assets.run / "pair_scores.csv")
    threshold = float(np.round(np.median(scores.clean_prob), 2))
    n_flagged = int(scores.flagged(threshold).sum())
    assert 0 < n_flagged < len(scores)
    counts, summary, _figure, table = served.client.predict(
        threshold, "flagged", "clean probability", False, "", 1000, api_name="/explorer"
    )
    rows = _rows(table)
    assert summary["n_flagged"] == n_flagged and summary["n_pairs"] == len(scores)
    assert {"auroc", "noisy_precision", "noisy_recall"} <= summary.keys()  # synthetic noise: truth is known
    assert f"**{n_flagged}**" in counts
    assert len(rows) == n_flagged
    assert all(r[8] == "yes" for r in rows)
    assert [r[3] for r in rows] == sorted(r[3] for r in rows)
    flagged_pairs = set(scores.pair[scores.flagged(threshold)].tolist())
    assert {r[0] for r in rows} == flagged_pairs
    # Thumbnails of training images are served from under the gallery root.
    assert rows[0][1].startswith("![](gradio_api/file=")


def test_explain_pair_names_the_preferred_partners(served: Served, assets: Assets) -> None:
    scores = PairScores.read(assets.run / "pair_scores.csv")
    r = int(np.argmin(scores.clean_prob))
    why, own_image, _best_image = served.client.predict(int(scores.pair[r]), 0.5, api_name="/explain_pair")
    assert f"Pair {int(scores.pair[r])}" in why
    assert f"#{int(scores.image_rank[r])}" in why
    assert own_image is not None and Path(own_image).is_file()


def test_export_writes_flagged_csv_and_noise_index(served: Served, assets: Assets) -> None:
    scores = PairScores.read(assets.run / "pair_scores.csv")
    threshold = float(np.round(np.median(scores.clean_prob), 2))
    csv_file, index_files = served.client.predict(threshold, api_name="/export_flagged")
    exported = PairScores.read(csv_file)
    mask = scores.flagged(threshold)
    assert len(exported) == int(mask.sum())
    assert exported.pair.tolist() == scores.pair[mask].tolist()
    by_name = {Path(p).name: Path(p) for p in index_files}
    index = np.load(by_name["noise_index.npy"], allow_pickle=False)
    flags = np.load(by_name["noise_index.flagged.npy"], allow_pickle=False)
    assert index.shape == flags.shape == (len(scores),)  # one entry per training caption
    assert index[scores.caption_index].tolist() == scores.image_index.tolist()
    assert int(flags.sum()) == int(mask.sum())


def test_model_card_reports_method_noise_and_recall(served: Served) -> None:
    card = served.client.predict(api_name="/model_card")
    assert "**Method:** disncl" in card
    assert "image-level, rate 0.5" in card
    assert "Test recall" in card and "| MII only |" in card and "| full feature |" in card


def test_errors_say_what_to_change(served: Served) -> None:
    with pytest.raises(Exception, match="upload one, or pick one from the gallery"):
        served.client.predict(None, None, K, api_name="/search_image")
    with pytest.raises(Exception, match="out of range"):
        served.client.predict(None, 999, K, api_name="/search_image")
    with pytest.raises(Exception, match="no caption"):
        served.client.predict("   ", K, api_name="/search_text")


def test_only_the_gallery_root_is_served(served: Served) -> None:
    inside = served.services.gallery.image_path(0).resolve()
    assert http_status(f"{served.url}gradio_api/file={inside}") == 200
    for outside in (REPO / "README.md", Path("/etc/passwd"), served.services.bundle.path.resolve() / "manifest.json"):
        assert http_status(f"{served.url}gradio_api/file={outside}") == 403


def test_result_images_are_served_in_place_and_only_from_the_root(served: Served) -> None:
    root = served.services.gallery.root.resolve()
    _, tiles, _, _ = gradio_client.Client(served.url, verbose=False, download_files=False).predict(
        served.services.gallery.captions[0], 3, api_name="/search_text")
    for tile in tiles:
        # An absolute URL of Gradio's file route to the gallery's own file, not to a copy in Gradio's cache.
        url = tile["image"]["url"]
        assert url.startswith(f"{served.url}gradio_api/file=") and tile["image"]["path"] == url
        assert Path(unquote(url.split("file=", 1)[1])).resolve().is_relative_to(root)
        assert http_status(url) == 200
    inside = served.services.gallery.image_path(0).resolve()
    climbing = f"{inside.parent}/{'../' * len(inside.parents)}etc/passwd"
    link = inside.parent / "link_to_outside.png"
    link.symlink_to(REPO / "README.md")
    try:
        for refused in (climbing, f"{inside.parent}/%2e%2e/%2e%2e/README.md", str(link)):
            assert http_status(f"{served.url}gradio_api/file={refused}") in (403, 404), refused
    finally:
        link.unlink()


def test_a_query_with_unknown_words_says_which_and_what_the_model_knows(served: Served) -> None:
    notice, mii_tiles, _, _ = served.client.predict("a zebra on the red circle", K, api_name="/search_text")
    known = served.services.bundle.vocabulary
    assert known is not None and "zebra" not in known and "red" in known
    assert "**zebra**" in notice and "**red**" not in notice
    assert f"It knows {len(known)} words" in notice and "`red`" in notice
    assert len(mii_tiles) == K  # still answered: the notice explains, it does not refuse


def test_a_subword_tokenizer_has_no_unknown_words() -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    from disncl.serve.preprocess import tokenizer_words, unknown_words

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel()
    bpe.train_from_iterator(["a red circle above a blue square"] * 20,
                            trainers.BpeTrainer(vocab_size=300, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    unk_id, words = tokenizer_words(bpe)
    assert unk_id is None and words is None
    assert unknown_words(bpe, unk_id, "a zebra on the beach") == []


def _flag_order(scores: PairScores) -> np.ndarray:
    """Eq. 12c by a full sort: clean probability, then MII similarity, then pair number."""
    return np.lexsort((scores.pair, scores.mii_sim, scores.clean_prob))


def test_flag_by_count_flags_exactly_n_through_every_endpoint(served: Served) -> None:
    scores = served.services.pair_scores
    order = _flag_order(scores)
    for by, amount, n in (("count", 10, 10), ("percent", 30, round(0.3 * len(scores))), ("count", 0, 0)):
        t, got = served.client.predict(by, amount, api_name="/flag_threshold")
        assert got == n and t == (plain_float(np.sort(scores.clean_prob)[n - 1]) if n else 0.0), (by, amount)
        expected = scores.pair[order[:n]].tolist()
        _, summary, _, table, *_ = served.client.predict(t, "flagged", "clean probability", False, "", 1000, n,
                                                         api_name="/explorer")
        assert summary["n_flagged"] == n and summary["count"] == n
        assert sorted(r[0] for r in _rows(table)) == sorted(expected)
        csv_path, _ = served.client.predict(t, n, api_name="/export_flagged")
        assert Path(csv_path).name == f"flagged_pairs_n{n}.csv"
        assert sorted(PairScores.read(csv_path).pair.tolist()) == sorted(expected)
        queue = served.client.predict(t, {}, n, api_name="/review_queue")
        assert [r[0] for r in _rows(queue)] == expected[:100]
    n = 10
    t, _ = served.client.predict("count", n, api_name="/flag_threshold")
    first, after = (int(scores.pair[order[i]]) for i in (n - 1, n))
    why, *_ = served.client.predict(first, t, n, api_name="/explain_pair")
    assert "flagged as noisy" in why and f"count rule: the {n} least likely" in why
    why, *_ = served.client.predict(after, t, n, api_name="/explain_pair")
    assert "kept as clean" in why
    # Without the count the threshold decides, as before.
    _, summary, *_ = served.client.predict(t, "flagged", "clean probability", False, "", 1000, api_name="/explorer")
    assert summary["count"] == -1 and summary["n_flagged"] == int((scores.clean_prob <= t).sum())
    assert logic.flag_rule_for(served.services, "probability", 0.25) == (0.25, None)
    with pytest.raises(Exception, match="count must be a whole number between 0 and"):
        served.client.predict("count", len(scores) + 1, api_name="/flag_threshold")
    with pytest.raises(Exception, match="count must be a whole number between 0 and"):
        served.client.predict("count", 2.5, api_name="/flag_threshold")
    with pytest.raises(Exception, match="count must be a whole number of pairs between 0 and"):
        served.client.predict(t, len(scores) + 1, api_name="/export_flagged")
    with pytest.raises(logic.AppError, match="flag by must be one of"):
        logic.flag_rule_for(served.services, "top", 3)


def test_count_rule_breaks_ties_in_clean_probability(served: Served) -> None:
    """Where the posterior has underflowed to 0 for half the pairs, a threshold cannot flag fewer than
    that half; the count rule flags exactly N, the lowest MII similarities of the tie first."""
    scores = served.services.pair_scores
    half = len(scores) // 2
    low = np.argsort(scores.clean_prob, kind="stable")[:half]
    prob = scores.clean_prob.copy()
    prob[low] = 0.0
    tied = dataclasses.replace(scores, clean_prob=prob)
    services = dataclasses.replace(served.services, pair_scores=tied)
    for n in (1, half // 3, half - 1, half, half + 2):
        t, got = logic.flag_rule_for(services, "count", n)
        assert got == n and (t == 0.0) == (n <= half)
        assert logic.explorer_summary(services, t)["n_flagged"] >= half  # the threshold alone over-flags
        summary = logic.explorer_summary(services, t, n)
        flagged = tied.flagged(t, n)
        assert summary["n_flagged"] == int(flagged.sum()) == n
        assert np.array_equal(np.flatnonzero(flagged), np.sort(_flag_order(tied)[:n]))
        if n < half:
            assert tied.mii_sim[low][flagged[low]].max() <= tied.mii_sim[low][~flagged[low]].min()
        rows = logic.review_rows(services, t, {}, 1000, count=n)
        assert [r[0] for r in rows] == tied.pair[_flag_order(tied)[:n]].tolist()
        keep, drop = (set(map(int, f.read_text().split())) for f in logic.export_review(services, t, {}, n)[1:])
        assert len(drop) == n and len(keep) == len(tied) - n
    assert logic.flag_rule_for(services, "percent", 25)[1] == round(0.25 * len(tied))


def test_near_duplicates_are_the_pairs_above_the_cosine(served: Served) -> None:
    gallery = served.services.gallery
    summary, table = served.client.predict("caption", 0.97, api_name="/near_duplicates")
    x = gallery.embedding("caption", "full")
    sims = x @ x.T
    i, j = np.triu_indices(len(x), k=1)
    expected = int((sims[i, j] >= 0.97).sum())
    assert f"**{expected}** caption pairs" in summary
    rows = _rows(table)
    assert len(rows) == min(expected, 100)
    assert all(r[2] >= 0.97 for r in rows) and [r[2] for r in rows] == sorted((r[2] for r in rows), reverse=True)
    a, b = rows[0][0], rows[0][1]
    assert abs(rows[0][2] - float(sims[a, b])) < 1e-3 and rows[0][3] == gallery.captions[a]
    identical = sum(gallery.captions[p] == gallery.captions[q] for p, q in zip(i, j, strict=True)
                    if sims[p, q] >= 0.97)
    assert f"{identical} of the pairs are the identical text" in summary
    _, images = served.client.predict("image", 0.5, api_name="/near_duplicates")
    assert _rows(images) and _rows(images)[0][3].startswith("![](gradio_api/file=")
    with pytest.raises(Exception, match="threshold must be a cosine"):
        logic.near_duplicates(served.services, "caption", 0.2)


def test_review_queue_suggests_rematches_and_exports_the_decisions(served: Served, assets: Assets) -> None:
    import csv

    scores = served.services.pair_scores
    t = 0.5
    queue = served.client.predict(t, {}, api_name="/review_queue")
    rows = _rows(queue)
    flagged = np.flatnonzero(scores.clean_prob <= t)
    assert len(rows) == min(len(flagged), 100)
    assert [r[3] for r in rows] == sorted(r[3] for r in rows) and all(r[6] == "undecided" for r in rows)
    first = rows[0]
    info = scores.explain(first[0], t)
    assert first[4] == info["best_caption_for_image"]["text"]
    accepted, kept = rows[0][0], rows[1][0]
    decided = served.client.predict({}, accepted, "accept", api_name="/review_decide")
    decided = served.client.predict(decided, kept, "keep", api_name="/review_decide")
    assert decided == {str(min(accepted, kept)): "accept" if accepted < kept else "keep",
                       str(max(accepted, kept)): "keep" if accepted < kept else "accept"}
    queue = served.client.predict(t, decided, api_name="/review_queue")
    assert {r[0]: r[6] for r in _rows(queue)}[accepted] == "accept"
    corrected, keep_file, drop_file = served.client.predict(t, decided, api_name="/export_review")
    keep = [int(x) for x in Path(keep_file).read_text().split()]
    drop = [int(x) for x in Path(drop_file).read_text().split()]
    assert set(drop) == set(int(p) for p in scores.pair[flagged]) - {accepted, kept}
    assert sorted(keep + drop) == sorted(int(p) for p in scores.pair) and accepted in keep and kept in keep
    with open(corrected, encoding="utf-8", newline="") as fh:
        table = list(csv.DictReader(fh))
    assert len(table) == len(keep)
    by_image = [row for row in table if row["image"] == info["image"]]
    assert any(row["caption"] == info["best_caption_for_image"]["text"] for row in by_image)
    with pytest.raises(Exception, match="expected one of accept"):
        served.client.predict(t, {str(accepted): "maybe"}, api_name="/export_review")


def test_app_does_not_import_torch() -> None:
    code = "import sys, app; assert 'torch' not in sys.modules, 'app.py pulled in torch'"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, check=True, timeout=120)


def test_explorer_filters_and_sorts(served: Served) -> None:
    services = served.services
    scores = services.pair_scores
    rows = logic.explorer_rows(services, 0.5, "kept", "MII similarity", True, "", 1000)
    assert len(rows) == int((~scores.flagged(0.5)).sum())
    assert all(r[8] == "no" for r in rows)
    assert [r[4] for r in rows] == sorted((r[4] for r in rows), reverse=True)
    word = scores.caption[0].split()[-1]
    rows = logic.explorer_rows(services, 0.5, "all", "pair", False, word.upper(), 5)
    assert 0 < len(rows) <= 5 and all(word in r[2].lower() for r in rows)
    assert [r[0] for r in rows] == sorted(r[0] for r in rows)


def test_explorer_without_pair_scores_says_how_to_attach_them(served: Served) -> None:
    bare = logic.Services(bundle=served.services.bundle, gallery=served.services.gallery, pair_scores=None)
    with pytest.raises(logic.AppError, match="--pair-scores"):
        logic.explorer_summary(bare, 0.5)
    endpoints = {fn.api_name for fn in app.build_app(bare).fns.values()}
    assert {"search_text", "search_image", "inspect_pair", "model_card"} <= endpoints
    assert "explorer" not in endpoints


def test_app_asked_for_cuda_on_a_cpu_machine_says_why_and_exits(assets: Assets, capsys) -> None:
    from disncl.serve.providers import cuda_problem

    if cuda_problem() is None:
        pytest.skip("this machine can run CUDA")
    code = app.main(["--bundle", str(assets.bundle), "--gallery", str(assets.gallery), "--providers", "cuda"])
    err = capsys.readouterr().err
    assert code == 2 and "CUDA was requested but cannot be used" in err and cuda_problem() in err
