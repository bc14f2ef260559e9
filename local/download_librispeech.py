#!/usr/bin/env python3
"""Download and unpack LibriSpeech tarballs with md5 checks and resumable transfers.

    python local/download_librispeech.py --out downloads --subsets train-clean-100 dev-clean test-clean test-other

For each subset: ``<out>/<subset>.tar.gz`` is fetched from --base_url
(a partial ``.part`` file is resumed with an HTTP Range request), its md5 is
checked against the official sums (or --checksums, an md5sum-style file),
and it is unpacked into ``<out>/LibriSpeech/<subset>/``, which gets a
``.complete`` marker. A rerun skips finished subsets. A wrong md5 stops the
run with both sums and keeps the file as ``<name>.md5-mismatch`` for
inspection (it is never unpacked).
"""

import argparse
import hashlib
import logging
import pathlib
import tarfile
import urllib.error
import urllib.request
from typing import Dict, Optional

log = logging.getLogger("download_librispeech")

BASE_URL = "https://www.openslr.org/resources/12"
# https://www.openslr.org/resources/12/md5sum.txt
OFFICIAL_MD5 = {
    "dev-clean": "42e2234ba48799c1f50f24a7926300a1",
    "dev-other": "c8d0bcc9cca99d4f8b62fcc847357931",
    "test-clean": "32fa31d27d2e1cad72775fee3f4849a9",
    "test-other": "fb5a50374b501bb3bac4815ee91d3135",
    "train-clean-100": "2a93770f6d5c6c964bc36631d331a522",
    "train-clean-360": "c0e676e450a7ff2f54aeade5171606fa",
    "train-other-500": "d1a0fd59409feb2c614ce4d30c387708",
}
CHUNK = 1 << 20


class ChecksumError(RuntimeError):
    pass


def md5_of(path: pathlib.Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def read_checksums(path: pathlib.Path) -> Dict[str, str]:
    """md5sum format: ``<md5>  <subset>.tar.gz`` per line."""
    sums = {}
    for line in path.read_text().splitlines():
        if line.strip():
            digest, name = line.split()
            sums[name.removesuffix(".tar.gz")] = digest
    return sums


def fetch(url: str, destination: pathlib.Path, timeout: float = 60.0) -> pathlib.Path:
    """Download url to destination, resuming ``destination.part`` if present."""
    from tqdm import tqdm

    partial = destination.with_name(destination.name + ".part")
    offset = partial.stat().st_size if partial.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={offset}-"} if offset else {})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as error:
        if error.code == 416 and offset:  # the .part is already complete
            partial.replace(destination)
            return destination
        raise RuntimeError(f"download of {url} failed: HTTP {error.code} {error.reason}") from error
    with response:
        if offset and response.status != 206:
            log.info("%s: server ignored the resume request; starting over", url)
            offset = 0
        elif offset:
            log.info("%s: resuming at byte %d", url, offset)
        total = response.headers.get("Content-Length")
        total = int(total) + offset if total is not None else None
        with open(partial, "ab" if offset else "wb") as handle, tqdm(
            total=total, initial=offset, unit="B", unit_scale=True, desc=destination.name, disable=None
        ) as progress:
            for block in iter(lambda: response.read(CHUNK), b""):
                handle.write(block)
                progress.update(len(block))
    partial.replace(destination)
    return destination


def verify(path: pathlib.Path, expected: Optional[str]) -> None:
    if expected is None:
        raise ChecksumError(f"{path.name}: no md5 known for it; give one with --checksums")
    actual = md5_of(path)
    if actual != expected:
        kept = path.with_name(path.name + ".md5-mismatch")
        path.replace(kept)
        raise ChecksumError(
            f"{path.name}: md5 {actual} does not match the expected {expected}; "
            f"the file is kept as {kept} and was not unpacked"
        )


def download_subset(subset: str, out: pathlib.Path, base_url: str, checksums: Dict[str, str]) -> pathlib.Path:
    target = out / "LibriSpeech" / subset
    marker = target / ".complete"
    if marker.exists():
        log.info("%s: already unpacked in %s", subset, target)
        return target
    out.mkdir(parents=True, exist_ok=True)
    archive = out / f"{subset}.tar.gz"
    if not archive.exists():
        fetch(f"{base_url.rstrip('/')}/{subset}.tar.gz", archive)
    verify(archive, checksums.get(subset))
    log.info("%s: md5 ok; unpacking", subset)
    with tarfile.open(archive) as tar:
        tar.extractall(out, filter="data")  # "data": no absolute paths, links out of out/, devices
    if not target.is_dir():
        raise RuntimeError(f"{archive} did not contain LibriSpeech/{subset}/")
    marker.touch()
    return target


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=pathlib.Path, required=True)
    parser.add_argument("--subsets", nargs="+", required=True, choices=sorted(OFFICIAL_MD5))
    parser.add_argument("--base_url", default=BASE_URL, help="mirror, e.g. https://us.openslr.org/resources/12")
    parser.add_argument("--checksums", type=pathlib.Path, help="md5sum-style file replacing the official sums")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s (download) %(message)s")
    checksums = read_checksums(args.checksums) if args.checksums else OFFICIAL_MD5
    for subset in args.subsets:
        download_subset(subset, args.out, args.base_url, checksums)


if __name__ == "__main__":
    main()
