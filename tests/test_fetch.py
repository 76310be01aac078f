"""Downloads (against a local HTTP server), safe extraction, and the three kinds of `source`."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import stat
import tarfile
import threading
import zipfile
from collections import namedtuple
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from restorebench.config import SampleConfig
from restorebench.data import archives, fetch
from restorebench.data.fetch import (
    ChecksumMismatch,
    DownloadError,
    InsufficientSpace,
    LayoutError,
    UnsafeArchive,
    download,
    fetch_dataset,
    safe_extract,
)
from restorebench.data.manifest import build_manifest
from restorebench.data.samples import make_sample
from restorebench.data.sources import SOURCES, Archive, DatasetSource

PAYLOAD = bytes(range(256)) * 4096  # 1 MiB
TINY = SampleConfig(
    gopro_train_sequences=1,
    gopro_test_sequences=1,
    gopro_frames=1,
    gopro_height=32,
    gopro_width=48,
    gopro_average=3,
)


class Server:
    """A 127.0.0.1 HTTP server with Range support; `drop_next` cuts the next body halfway."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.ranges: list[str | None] = []
        self.drop_next = False
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:  # keep test output quiet
                pass

            def do_GET(self) -> None:  # noqa: N802
                data = owner.files.get(self.path)
                rng = self.headers.get("Range")
                owner.ranges.append(rng)
                if data is None:
                    self.send_error(404)
                    return
                start = int(rng.split("=")[1].split("-")[0]) if rng else 0
                body = data[start:]
                self.send_response(206 if rng else 200)
                if rng:
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if owner.drop_next:
                    owner.drop_next = False
                    body = body[: len(body) // 2]  # then the connection closes mid-file
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()


@pytest.fixture
def server() -> Server:
    s = Server()
    yield s
    s.httpd.shutdown()
    s.httpd.server_close()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ---------------------------------------------------------------------------------------- download


def test_full_download_records_checksum(server: Server, tmp_path: Path) -> None:
    server.files["/a.bin"] = PAYLOAD
    out = download(f"{server.url}/a.bin", tmp_path / "a.bin", checksums=tmp_path / "checksums.json")
    assert out.read_bytes() == PAYLOAD
    assert json.loads((tmp_path / "checksums.json").read_text()) == {"a.bin": sha(PAYLOAD)}
    assert not (tmp_path / "a.bin.part").exists()


def test_resume_after_dropped_connection(server: Server, tmp_path: Path) -> None:
    server.files["/a.bin"] = PAYLOAD
    server.drop_next = True
    out = download(f"{server.url}/a.bin", tmp_path / "a.bin", checksums=tmp_path / "c.json", backoff=0.01)
    assert out.read_bytes() == PAYLOAD
    assert server.ranges[0] is None and server.ranges[1] == f"bytes={len(PAYLOAD) // 2}-"


def test_checksum_mismatch_removes_file(server: Server, tmp_path: Path) -> None:
    server.files["/a.bin"] = PAYLOAD
    checksums = tmp_path / "checksums.json"
    checksums.write_text(json.dumps({"a.bin": "0" * 64}))
    with pytest.raises(ChecksumMismatch) as err:
        download(f"{server.url}/a.bin", tmp_path / "a.bin", checksums=checksums)
    assert "a.bin" in str(err.value) and "0" * 64 in str(err.value) and sha(PAYLOAD) in str(err.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checksums.json"]


def test_later_fetch_verifies_cached_file(server: Server, tmp_path: Path) -> None:
    server.files["/a.bin"] = PAYLOAD
    download(f"{server.url}/a.bin", tmp_path / "a.bin", checksums=tmp_path / "c.json")
    (tmp_path / "a.bin").write_bytes(PAYLOAD[:-1] + b"x")  # bit rot in the cache
    with pytest.raises(ChecksumMismatch, match="a.bin: sha256 mismatch"):
        download(f"{server.url}/a.bin", tmp_path / "a.bin", checksums=tmp_path / "c.json")
    assert not (tmp_path / "a.bin").exists()


def test_mirror_used_when_primary_fails_and_errors_name_the_file(server: Server, tmp_path: Path) -> None:
    server.files["/mirror/a.bin"] = PAYLOAD
    out = download(
        f"{server.url}/gone/a.bin",
        tmp_path / "a.bin",
        mirrors=[f"{server.url}/mirror/a.bin"],
        checksums=tmp_path / "c",
    )
    assert out.read_bytes() == PAYLOAD
    with pytest.raises(DownloadError, match=r"b.bin: download failed after 2 round\(s\)"):
        download(f"{server.url}/b.bin", tmp_path / "b.bin", checksums=tmp_path / "c", retries=2, backoff=0.01)


def test_free_disk_check_before_download(
    server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server.files["/a.bin"] = PAYLOAD
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(10**9, 10**9 - 2**20, 2**20))
    with pytest.raises(InsufficientSpace, match="download of a.bin: needs"):
        download(f"{server.url}/a.bin", tmp_path / "a.bin", checksums=tmp_path / "c", min_free_bytes=2**19)
    assert not list(tmp_path.iterdir())


# ---------------------------------------------------------------------------------------- archives


def make_zip(path: Path, members: dict[str, bytes], links: dict[str, str] | None = None) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
        for name, target in (links or {}).items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, target)
    return path


def make_tar(
    path: Path, members: dict[str, bytes], links: dict[str, tuple[str, bytes]] | None = None
) -> Path:
    with tarfile.open(path, "w:gz" if path.name.endswith(".gz") else "w") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
        for name, (target, kind) in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = kind, target
            tf.addfile(info)
    return path


@pytest.mark.parametrize(
    "kind,member",
    [
        ("zip", "../evil.txt"),
        ("zip", "/tmp/evil.txt"),
        ("zip-link", "escape"),
        ("tar", "../evil.txt"),
        ("tar", "/tmp/evil.txt"),
        ("tar-symlink", "escape"),
        ("tar-hardlink", "escape"),
    ],
)
def test_zip_slip_refused_naming_the_member(tmp_path: Path, kind: str, member: str) -> None:
    ok = {"data/ok.txt": b"fine"}
    if kind == "zip":
        archive = make_zip(tmp_path / "a.zip", {**ok, member: b"x"})
    elif kind == "zip-link":
        archive = make_zip(tmp_path / "a.zip", ok, links={"data/escape": "../../outside"})
    elif kind == "tar":
        archive = make_tar(tmp_path / "a.tar.gz", {**ok, member: b"x"})
    else:
        link_type = tarfile.SYMTYPE if kind == "tar-symlink" else tarfile.LNKTYPE
        archive = make_tar(tmp_path / "a.tar", ok, links={"data/escape": ("../../outside", link_type)})
    target = tmp_path / "out" / "dataset"
    with pytest.raises(UnsafeArchive, match=member.replace(".", r"\.")):
        safe_extract(archive, target)
    assert not target.exists() and not (tmp_path / "evil.txt").exists()
    assert list((tmp_path / "out").iterdir()) == []  # no temporary folder left either


def test_safe_extract_good_archives(tmp_path: Path) -> None:
    z = make_zip(tmp_path / "a.zip", {"root/x.txt": b"1", "root/sub/y.txt": b"2"})
    t = make_tar(tmp_path / "a.tar.gz", {"root/x.txt": b"1"}, links={"root/l": ("x.txt", tarfile.SYMTYPE)})
    assert (safe_extract(z, tmp_path / "z") / "root/sub/y.txt").read_bytes() == b"2"
    out = safe_extract(t, tmp_path / "t")
    assert (out / "root/l").is_symlink() and (out / "root/l").read_bytes() == b"1"


def test_free_disk_check_before_extracting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    archive = make_zip(tmp_path / "big.zip", {"f.bin": PAYLOAD})
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(10**9, 10**9, 1000))
    with pytest.raises(InsufficientSpace, match="extraction of big.zip"):
        safe_extract(archive, tmp_path / "out")
    assert not (tmp_path / "out").exists()


# ----------------------------------------------------------------------------------------- sources


def test_path_source_folder_is_linked_not_copied(tmp_path: Path) -> None:
    copy = make_sample("gopro", tmp_path / "elsewhere", TINY, seed=0)
    dest = fetch_dataset(
        "gopro",
        str(copy),
        tmp_path / "raw" / "gopro",
        cache_dir=tmp_path / "c",
        sample=TINY,
        seed=0,
        min_free_bytes=0,
    )
    link = dest / "GOPRO_Large"
    assert link.is_symlink() and link.resolve() == (copy / "GOPRO_Large").resolve()
    assert not dest.is_symlink() and [p.name for p in dest.iterdir()] == ["GOPRO_Large"]
    assert len(build_manifest("gopro", dest, workers=1)) == 2  # downstream globbing follows the link
    # pointing at the layout folder itself works too
    fetch_dataset(
        "gopro",
        str(copy / "GOPRO_Large"),
        dest,
        cache_dir=tmp_path / "c",
        sample=TINY,
        seed=0,
        min_free_bytes=0,
    )
    assert (dest / "GOPRO_Large").resolve() == (copy / "GOPRO_Large").resolve()


def test_path_source_with_wrong_layout_names_the_path(tmp_path: Path) -> None:
    bad = tmp_path / "my_sidd"
    (bad / "SIDD_Medium_Srgb" / "Images").mkdir(parents=True)
    with pytest.raises(LayoutError, match=r"my_sidd: SIDD_Medium_Srgb/ has no Data/ folder"):
        fetch_dataset(
            "sidd", str(bad), tmp_path / "raw", cache_dir=tmp_path, sample=TINY, seed=0, min_free_bytes=0
        )
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(LayoutError, match=r"empty: not a sidd copy: expected SIDD_Medium_Srgb/Data/"):
        fetch_dataset(
            "sidd", str(empty), tmp_path / "raw", cache_dir=tmp_path, sample=TINY, seed=0, min_free_bytes=0
        )
    with pytest.raises(FileNotFoundError, match="nowhere does not exist"):
        fetch_dataset("sidd", str(tmp_path / "nowhere"), tmp_path / "raw", cache_dir=tmp_path, sample=TINY, seed=0,
                      min_free_bytes=0)  # fmt: skip
    assert not (tmp_path / "raw").exists()


def test_archive_source_without_top_folder(tmp_path: Path) -> None:
    sample = make_sample("gopro", tmp_path / "build", TINY, seed=0) / "GOPRO_Large"
    archive = shutil.make_archive(str(tmp_path / "gopro"), "gztar", sample)  # train/ and test/ at the top
    dest = fetch_dataset(
        "gopro", archive, tmp_path / "raw", cache_dir=tmp_path, sample=TINY, seed=0, min_free_bytes=0
    )
    assert sorted(p.name for p in (dest / "GOPRO_Large").iterdir()) == ["test", "train"]
    assert len(build_manifest("gopro", dest, workers=1)) == 2


def test_imagenet_url_source_asks_for_a_manual_download(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="ILSVRC2012_img_train.tar yourself"):
        fetch_dataset(
            "imagenet", "url", tmp_path / "raw", cache_dir=tmp_path, sample=TINY, seed=0, min_free_bytes=0
        )


def test_imagenet_train_tar_of_class_tars(tmp_path: Path) -> None:
    inner = make_tar(tmp_path / "n01440764.tar", {"n01440764_1.JPEG": b"jpeg1", "n01440764_2.JPEG": b"jpeg2"})
    outer = tmp_path / "ILSVRC2012_img_train.tar"
    with tarfile.open(outer, "w") as tf:
        tf.add(inner, arcname=inner.name)
    dest = fetch_dataset("imagenet", str(outer), tmp_path / "raw", cache_dir=tmp_path, sample=TINY, seed=0,
                         min_free_bytes=0)  # fmt: skip
    # the class tar is kept as it is (read in place through the manifest's offsets), nothing unpacked
    assert sorted(p.name for p in (dest / "train").iterdir()) == ["n01440764.tar"]
    assert (dest / "train" / "n01440764.tar").read_bytes() == inner.read_bytes()


def test_url_source_downloads_and_extracts(
    server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sample = make_sample("gopro", tmp_path / "build", TINY, seed=0)
    archive = shutil.make_archive(str(tmp_path / "GOPRO_Large"), "zip", sample, "GOPRO_Large")
    server.files["/GOPRO_Large.zip"] = Path(archive).read_bytes()
    src = DatasetSource("gopro", server.url, (Archive("GOPRO_Large.zip", f"{server.url}/GOPRO_Large.zip"),),
                        layout_root="GOPRO_Large", required=("train", "test"))  # fmt: skip
    monkeypatch.setitem(SOURCES, "gopro", src)
    cache = tmp_path / "cache"
    dest = fetch_dataset("gopro", "url", tmp_path / "raw" / "gopro", cache_dir=cache, sample=TINY, seed=0,
                         min_free_bytes=0)  # fmt: skip
    assert (dest / "GOPRO_Large" / "train").is_dir()
    assert json.loads((cache / "checksums.json").read_text()) == {
        "GOPRO_Large.zip": sha(Path(archive).read_bytes())
    }
    assert fetch.sha256_file(cache / "GOPRO_Large.zip") == sha(Path(archive).read_bytes())


# ------------------------------------------------------------------------- link chains (d/l -> .., d/l/l2 -> ..)


def _gopro_zip_with(tmp_path: Path, links: dict[str, str], files: dict[str, bytes]) -> Path:
    """A GoPro-shaped zip (so only the links can make it fail) with extra link and file members, in order."""
    path = tmp_path / "evil.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("GOPRO_Large/train/GOPR0001_00_00/blur/000001.png", b"x")
        zf.writestr("GOPRO_Large/test/GOPR0002_00_00/blur/000001.png", b"x")
        for name, target in links.items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, target)
        for name, data in files.items():
            zf.writestr(name, data)
    return path


CHAINS = {
    # a link chain: each link alone stays inside (d/.. and d/l/..), the chain leaves
    "chain": ({"d/l": "..", "d/l/l2": ".."}, {"d/l/l2/evil.txt": b"pwned"}),
    "deeper": (
        {"a/b/l": "..", "a/b/l/l2": "..", "a/b/l/l2/l3": "..", "a/b/l/l2/l3/l4": ".."},
        {"a/b/l/l2/l3/l4/evil.txt": b"pwned"},
    ),
}


@pytest.mark.parametrize("case", sorted(CHAINS))
def test_a_symlink_chain_in_a_zip_is_refused_and_the_previous_copy_kept(tmp_path: Path, case: str) -> None:
    links, files = CHAINS[case]
    work = tmp_path / "project"
    raw, manifest = work / "data/raw/gopro", work / "data/manifests/gopro.parquet"
    fetch.fetch_and_index("gopro", "sample", raw, manifest, cache_dir=work / "c", sample=TINY, seed=0,
                          min_free_bytes=0, expected_pairs={})  # fmt: skip
    before = {p: p.read_bytes() for p in [*raw.rglob("*.png"), manifest]}
    archive = _gopro_zip_with(tmp_path, links, files)
    with pytest.raises(UnsafeArchive, match=r"member '[^']*l' is a symbolic link") as err:
        fetch.fetch_and_index("gopro", str(archive), raw, manifest, cache_dir=work / "c", sample=TINY, seed=0,
                              min_free_bytes=0, expected_pairs={})  # fmt: skip
    assert "\n" not in str(err.value) and str(archive) in str(err.value)
    assert not list(tmp_path.rglob("evil.txt")) and not (tmp_path.parent / "evil.txt").exists()
    assert {p: p.read_bytes() for p in [*raw.rglob("*.png"), manifest]} == before
    assert sorted(p.name for p in (work / "data/raw").iterdir()) == ["gopro"]  # no staging folder left


@pytest.mark.parametrize("case", sorted(CHAINS))
def test_a_symlink_chain_in_a_tar_is_refused_naming_the_member(tmp_path: Path, case: str) -> None:
    links, files = CHAINS[case]
    archive = make_tar(tmp_path / "evil.tar", {}, links={k: (v, tarfile.SYMTYPE) for k, v in links.items()})
    with tarfile.open(archive, "a") as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    target = tmp_path / "out" / "x"
    with pytest.raises(
        UnsafeArchive, match=r"member '[^']*/l\d' links to '\.\.', which resolves outside"
    ) as err:
        safe_extract(archive, target)
    assert "Traceback" not in str(err.value) and "\n" not in str(err.value)
    assert not list(tmp_path.rglob("evil.txt")) and not target.exists()


def test_zero_or_too_few_pairs_fail_fetch_with_the_count(tmp_path: Path) -> None:
    raw, manifest = tmp_path / "raw/gopro", tmp_path / "manifests/gopro.parquet"
    empty = tmp_path / "empty_copy" / "GOPRO_Large"
    (empty / "train").mkdir(parents=True)
    (empty / "test").mkdir()
    with pytest.raises(fetch.IncompleteDataset, match=r"gopro: 0 pairs found"):
        fetch.fetch_and_index("gopro", str(empty.parent), raw, manifest, cache_dir=tmp_path, sample=TINY, seed=0,
                              min_free_bytes=0, expected_pairs={})  # fmt: skip
    with pytest.raises(fetch.IncompleteDataset, match=r"fewer pairs than expected \(train 1 of 5\)"):
        fetch.fetch_and_index("gopro", "sample", raw, manifest, cache_dir=tmp_path, sample=TINY, seed=0,
                              min_free_bytes=0, expected_pairs={"train": 5, "test": 1})  # fmt: skip
    assert not raw.exists() and not manifest.exists()


def test_a_truncated_sidd_mat_fails_fetch_naming_it_before_any_swap(tmp_path: Path) -> None:
    from restorebench.errors import RestorebenchError

    tiny = SampleConfig(sidd_instances=1, sidd_height=32, sidd_width=32, sidd_val_images=1, sidd_val_blocks=2,
                        sidd_val_block_size=16)  # fmt: skip
    raw, manifest = tmp_path / "raw/sidd", tmp_path / "manifests/sidd.parquet"
    fetch.fetch_and_index("sidd", "sample", raw, manifest, cache_dir=tmp_path, sample=tiny, seed=0,
                          min_free_bytes=0, expected_pairs={})  # fmt: skip
    before = manifest.read_bytes()
    copy = make_sample("sidd", tmp_path / "theirs", tiny, seed=1)
    mat = copy / "ValidationGtBlocksSrgb.mat"
    mat.write_bytes(mat.read_bytes()[: mat.stat().st_size // 2])
    with pytest.raises(RestorebenchError, match=r"ValidationGtBlocksSrgb\.mat: unreadable \.mat file") as err:
        fetch.fetch_and_index("sidd", str(copy), raw, manifest, cache_dir=tmp_path, sample=tiny, seed=0,
                              min_free_bytes=0, expected_pairs={})  # fmt: skip
    assert str(raw) in str(err.value) and ".fetch" not in str(err.value)
    assert manifest.read_bytes() == before and not (raw / "SIDD_Medium_Srgb").is_symlink()


def test_tarfile_data_filter_refusals_become_one_line_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Should a member pass our own checks, tarfile's data filter still refuses it, and its
    LinkOutsideDestinationError arrives as an UnsafeArchive naming the member, not a traceback."""
    monkeypatch.setattr(archives, "_check_landing", lambda *a, **k: None)
    archive = make_tar(tmp_path / "evil.tar", {}, links={"d/l": ("..", tarfile.SYMTYPE),
                                                         "d/l/l2": ("..", tarfile.SYMTYPE)})  # fmt: skip
    with pytest.raises(UnsafeArchive, match=r"member 'd/l/l2' refused by tarfile's data filter "
                                            r"\(LinkOutsideDestinationError\)"):  # fmt: skip
        safe_extract(archive, tmp_path / "out" / "x")


def test_written_files_and_folders_get_the_umask_mode(tmp_path: Path) -> None:
    import os

    from restorebench import io as rio

    old = os.umask(0o027)
    try:
        rio.write_text(tmp_path / "a.txt", "x")
        with rio.atomic_dir(tmp_path / "d") as tmp:
            (tmp / "f").write_text("y")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == 0o640
    assert stat.S_IMODE((tmp_path / "d").stat().st_mode) == 0o750
