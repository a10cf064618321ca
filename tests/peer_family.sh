#!/usr/bin/env bash
# transformers' own common model tests (../shared/peer-tests) on VideoLLM-MoD over another decoder family. The shared
# tester builds a Llama text config; this runs a copy of it whose text config names FAMILY instead (each family's
# defaults otherwise: Mistral's 4096-token window, Qwen3's q/k norms and 128-wide heads).
#     tests/peer_family.sh mistral|qwen2|qwen3|llama     (from the project's root, its environment active)
set -euo pipefail
family=${1:?usage: tests/peer_family.sh mistral|qwen2|qwen3|llama}
shared=$(cd "$(dirname "$0")/../../shared/peer-tests" && pwd)
copy=$(mktemp -d)
trap 'rm -rf "$copy"' EXIT
cp "$shared"/* "$copy"/
chmod u+w "$copy"/*
grep -q '"model_type": "llama",' "$copy/peer_common.py" ||
  { echo "peer_common.py no longer sets its text model_type to llama: update $0"; exit 1; }
sed -i "s/\"model_type\": \"llama\",/\"model_type\": \"$family\",/" "$copy/peer_common.py"
echo "decoder family: $family"
"$copy/run.sh"
