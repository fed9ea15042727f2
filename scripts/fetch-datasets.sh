#!/usr/bin/env bash
# Fetch the four GELU-Net datasets (Iris, Pima Indians Diabetes, kr-vs-kp,
# MNIST) in their original distribution formats and verify their sha256.
#
# Usage:
#   scripts/fetch-datasets.sh [--dest DIR] [--mirror DIR] [--force]
#
#   --dest DIR    where to put the files (default: ./data). The layout is
#                 DIR/iris/, DIR/pima-diabetes/, DIR/kr-vs-kp/, DIR/mnist/, which
#                 is what gelunet expects (--data-dir DIR or GELUNET_DATA_DIR=DIR).
#   --mirror DIR  copy from a local directory with the same layout instead of
#                 downloading (e.g. --mirror ../shared/datasets).
#   --force       fetch again even if a file is already present and valid.
#
# Files already present with the right checksum are kept. Any checksum
# mismatch is an error: the bad file is not installed and the script exits 1.
# The checksums are those in the datasets README (MNIST files are byte-identical
# to the LeCun originals).
set -euo pipefail

dest="data"
mirror=""
force=0

usage() { sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; }
die() { echo "fetch-datasets: error: $*" >&2; exit 1; }

while [[ $# -gt 0 ]]; do
  case "$1" in
    --dest) [[ $# -ge 2 ]] || die "--dest needs a directory"; dest="$2"; shift 2 ;;
    --dest=*) dest="${1#*=}"; shift ;;
    --mirror) [[ $# -ge 2 ]] || die "--mirror needs a directory"; mirror="$2"; shift 2 ;;
    --mirror=*) mirror="${1#*=}"; shift ;;
    --force) force=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; die "unknown argument: $1" ;;
  esac
done

[[ -n "$dest" ]] || die "--dest must not be empty"
if [[ -n "$mirror" && ! -d "$mirror" ]]; then
  die "mirror directory '$mirror' does not exist"
fi

UCI="https://archive.ics.uci.edu/ml/machine-learning-databases"
MNIST_MIRRORS=(
  "https://ossci-datasets.s3.amazonaws.com/mnist"
  "https://storage.googleapis.com/cvdf-datasets/mnist"
)

# relative path | sha256 | space-separated source URLs, tried in order.
FILES=(
  "iris/iris.data|6f608b71a7317216319b4d27b4d9bc84e6abd734eda7872b71a458569e2656c0|$UCI/iris/iris.data"
  "iris/bezdekIris.data|0fed2a99db77ec533a62dc66894d3ec6df3b58b6a8f3cf4a6b47e4086b7f97dc|$UCI/iris/bezdekIris.data"
  "iris/iris.names|71a09fb3ee237614cdb9c09d06e8ae1f610ce2a274c0d77272fea8a233e5eea3|$UCI/iris/iris.names"
  "pima-diabetes/pima-indians-diabetes.data|06f5b7c2cd7bca686fda4f92eab5f61e7ff6426a9acefa2e3dda04fc54293cf5|$UCI/pima-indians-diabetes/pima-indians-diabetes.data https://raw.githubusercontent.com/jbrownlee/Datasets/master/pima-indians-diabetes.data.csv"
  "pima-diabetes/pima-indians-diabetes.names|60d1939616d51c185add571f935309973eed52eb33a31764aaeeef18745374c5|$UCI/pima-indians-diabetes/pima-indians-diabetes.names"
  "kr-vs-kp/kr-vs-kp.data|f47f7d920e117ab5764d3adcd2f6446ca596290261756ecd35c81b12fcaec061|$UCI/chess/king-rook-vs-king-pawn/kr-vs-kp.data"
)
for f in train-images-idx3-ubyte.gz:440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609 \
         train-labels-idx1-ubyte.gz:3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c \
         t10k-images-idx3-ubyte.gz:8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6 \
         t10k-labels-idx1-ubyte.gz:f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6; do
  name="${f%%:*}"
  urls=""
  for m in "${MNIST_MIRRORS[@]}"; do urls="$urls $m/$name"; done
  FILES+=("mnist/$name|${f#*:}|${urls# }")
done

if command -v sha256sum >/dev/null 2>&1; then
  sha256() { sha256sum "$1" | cut -d' ' -f1; }
elif command -v shasum >/dev/null 2>&1; then
  sha256() { shasum -a 256 "$1" | cut -d' ' -f1; }
else
  die "need sha256sum or shasum to verify the downloads"
fi

download() { # url output
  if command -v curl >/dev/null 2>&1; then
    curl -fsSL --retry 3 --connect-timeout 20 -o "$2" "$1"
  elif command -v wget >/dev/null 2>&1; then
    wget -q --tries=3 --timeout=20 -O "$2" "$1"
  else
    die "need curl or wget to download (or use --mirror DIR)"
  fi
}

failures=0
for entry in "${FILES[@]}"; do
  IFS='|' read -r rel want urls <<<"$entry"
  target="$dest/$rel"
  if [[ $force -eq 0 && -f "$target" ]]; then
    if [[ "$(sha256 "$target")" == "$want" ]]; then
      echo "ok       $rel (already present)"
      continue
    fi
    echo "warning: $target exists but its checksum is wrong; fetching it again" >&2
  fi
  mkdir -p "$(dirname "$target")"
  tmp="$target.part"
  rm -f "$tmp"
  got=""
  if [[ -n "$mirror" ]]; then
    src="$mirror/$rel"
    if [[ ! -f "$src" ]]; then
      echo "fetch-datasets: error: $src not found in mirror" >&2
      failures=$((failures + 1))
      continue
    fi
    cat "$src" >"$tmp"  # not cp: keep a writable mode even from a read-only mirror
    got="$(sha256 "$tmp")"
    from="$src"
  else
    from=""
    for url in $urls; do
      echo "fetching $url"
      if ! download "$url" "$tmp"; then
        echo "warning: download failed: $url" >&2
        continue
      fi
      got="$(sha256 "$tmp")"
      from="$url"
      [[ "$got" == "$want" ]] && break
      echo "warning: checksum mismatch for $url (got $got)" >&2
    done
    if [[ -z "$from" ]]; then
      rm -f "$tmp"
      echo "fetch-datasets: error: could not download $rel from any of: $urls" >&2
      failures=$((failures + 1))
      continue
    fi
  fi
  if [[ "$got" != "$want" ]]; then
    rm -f "$tmp"
    echo "fetch-datasets: error: checksum mismatch for $rel (from $from)" >&2
    echo "  expected sha256 $want" >&2
    echo "  got      sha256 $got" >&2
    failures=$((failures + 1))
    continue
  fi
  mv -f "$tmp" "$target"
  echo "ok       $rel (sha256 verified)"
done

if [[ $failures -gt 0 ]]; then
  die "$failures file(s) failed; nothing wrong was installed (see messages above)"
fi
echo "all datasets are in $dest (use --data-dir $dest or GELUNET_DATA_DIR=$dest)"
