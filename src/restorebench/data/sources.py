"""Where each dataset comes from and what a complete copy looks like on disk.

`SOURCES[name]` lists the official archives (with mirrors) that `source: url` downloads, and the folder
layout every other stage globs: `data/raw/{dataset}/{layout_root}/...`.

No dataset publishes checksums, so `fetch.download` records the sha256 of every archive the first time
it is fetched (in `{cache}/checksums.json`) and verifies it on every later fetch.

Facts, checked against the datasets' own pages and READMEs:

- SIDD: the project page moved from York University (https://www.eecs.yorku.ca/~kamel/sidd/) to
  https://abdokamel.github.io/sidd/ ; the files are still served by the York server 130.63.97.225
  (HTTP under /share/, and FTP with the public user sidd_user). SIDD_Medium_Srgb.zip is ~13.2 GB
  (13,234,744,070 bytes) and unpacks to SIDD_Medium_Srgb/Data/{instance}/; the validation blocks are two
  loose .mat files (~230 MB each), variables ValidationNoisyBlocksSrgb / ValidationGtBlocksSrgb,
  40 x 32 x 256 x 256 x 3 uint8.
- GoPro (Nah et al., CVPR 2017): https://seungjunnah.github.io/Datasets/gopro ; GOPRO_Large.zip (~8.9 GB)
  is mirrored by the author on the Hugging Face hub (snah/GOPRO_Large); the original SNU server is kept
  as a mirror. It unpacks to GOPRO_Large/{train,test}/GOPRxxxx_xx_xx/{blur,blur_gamma,sharp}/.
- ImageNet (ILSVRC2012): downloads need a login at image-net.org, so `source: url` cannot fetch it;
  the user downloads ILSVRC2012_img_train.tar (~138 GB, one tar per class inside) and sets the source
  to its path (or to the unpacked train/ folder).
"""

from __future__ import annotations

from dataclasses import dataclass, field

SIDD_HOME = "https://abdokamel.github.io/sidd/"  # formerly https://www.eecs.yorku.ca/~kamel/sidd/
SIDD_SERVER = "http://130.63.97.225/share/"
GOPRO_HOME = "https://seungjunnah.github.io/Datasets/gopro"
IMAGENET_HOME = "https://image-net.org/download-images"


@dataclass(frozen=True)
class Archive:
    """One file to download. `unpack`: extract it (zip/tar) into the dataset folder, else place it as is."""

    filename: str
    url: str
    mirrors: tuple[str, ...] = ()
    size: int | None = None  # bytes, when known (used for the free-space check if no Content-Length)
    unpack: bool = True


@dataclass(frozen=True)
class DatasetSource:
    """A dataset's official archives and the layout they produce under `data/raw/{dataset}/`."""

    name: str
    homepage: str
    archives: tuple[Archive, ...]
    # folder the main archive unpacks to (SIDD_Medium_Srgb, GOPRO_Large, train)
    layout_root: str
    # sub-folders that must exist under layout_root for the copy to be recognised
    required: tuple[str, ...]
    # loose files kept next to layout_root (SIDD validation blocks)
    extra_files: tuple[str, ...] = ()
    # set when no anonymous download exists: the message `source: url` fails with
    manual_download: str | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)


SIDD_VAL_NOISY = "ValidationNoisyBlocksSrgb.mat"
SIDD_VAL_GT = "ValidationGtBlocksSrgb.mat"

SOURCES: dict[str, DatasetSource] = {
    "sidd": DatasetSource(
        name="sidd",
        homepage=SIDD_HOME,
        archives=(
            Archive(
                "SIDD_Medium_Srgb.zip",
                SIDD_SERVER + "SIDD_Medium_Srgb.zip",
                size=13_234_744_070,
            ),
            Archive(
                SIDD_VAL_NOISY,
                SIDD_SERVER + "SIDD_Blocks/" + SIDD_VAL_NOISY,
                size=229_724_517,
                unpack=False,
            ),
            Archive(
                SIDD_VAL_GT,
                SIDD_SERVER + "SIDD_Blocks/" + SIDD_VAL_GT,
                size=232_055_617,
                unpack=False,
            ),
        ),
        layout_root="SIDD_Medium_Srgb",
        required=("Data",),
        extra_files=(SIDD_VAL_NOISY, SIDD_VAL_GT),
        notes=(
            "project page moved from https://www.eecs.yorku.ca/~kamel/sidd/ to " + SIDD_HOME,
            "FTP alternative (not used by the downloader): ftp://sidd_user:sidd_2018@130.63.97.225/",
        ),
    ),
    "gopro": DatasetSource(
        name="gopro",
        homepage=GOPRO_HOME,
        archives=(
            Archive(
                "GOPRO_Large.zip",
                "https://huggingface.co/datasets/snah/GOPRO_Large/resolve/main/GOPRO_Large.zip",
                mirrors=("http://data.cv.snu.ac.kr:8008/webdav/dataset/GOPRO/GOPRO_Large.zip",),
            ),
        ),
        layout_root="GOPRO_Large",
        required=("train", "test"),
        notes=(
            "blur: frames averaged directly on the stored pixel values (linear CRF assumed); "
            "blur_gamma: averaged after inverting a gamma 2.2 CRF, then gamma applied again",
        ),
    ),
    "imagenet": DatasetSource(
        name="imagenet",
        homepage=IMAGENET_HOME,
        archives=(
            Archive(
                "ILSVRC2012_img_train.tar",
                "https://image-net.org/data/ILSVRC/2012/ILSVRC2012_img_train.tar",
                size=147_897_477_120,
            ),
        ),
        layout_root="train",
        required=(),
        manual_download=(
            "ImageNet cannot be downloaded anonymously (image-net.org requires a login). "
            "Download ILSVRC2012_img_train.tar yourself from " + IMAGENET_HOME + " and set "
            "profiles.<profile>.data.imagenet.source in params.yaml to its path (or to the unpacked folder "
            "holding train/nXXXXXXXX/)."
        ),
    ),
}


def get_source(dataset: str) -> DatasetSource:
    """The `DatasetSource` for `dataset`; unknown names fail listing the known ones."""
    if dataset not in SOURCES:
        raise ValueError(f"unknown dataset {dataset!r}; choose from {sorted(SOURCES)}")
    return SOURCES[dataset]
