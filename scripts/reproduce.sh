#!/usr/bin/env bash
# Reproduce every committed study: rerun each in turn (resumable: a finished run is kept, an
# interrupted sweep continues where it stopped), redraw its figures and report, then regenerate
# the README's generated numbers from the tables.
#
#   bash scripts/reproduce.sh            # rerun (what is already stored is kept), redraw, regenerate
#   bash scripts/reproduce.sh --check    # retrain a sample of each study's groups with `lrd verify`
#   bash scripts/reproduce.sh copy modern   # only these studies
#
# Exit 75 from `lrd run` (a stalled computation, see docs/reliability.md) is retried; any other
# failure stops the script with that exit code.
set -euo pipefail
cd "$(dirname "$0")/.."

check=false
studies=()
for arg in "$@"; do
    case "$arg" in
        --check) check=true ;;
        -*) echo "reproduce.sh: unknown option $arg (allowed: --check)" >&2; exit 2 ;;
        *) studies+=("$arg") ;;
    esac
done
if [ ${#studies[@]} -eq 0 ]; then
    for dir in results/*/; do
        name=$(basename "$dir")
        [ -f "experiments/$name.toml" ] && studies+=("$name")
    done
fi
for name in "${studies[@]}"; do
    [ -f "experiments/$name.toml" ] || { echo "reproduce.sh: experiments/$name.toml: no such study" >&2; exit 2; }
done

start=$(date +%s)
for name in "${studies[@]}"; do
    echo "== $name"
    if $check; then
        lrd verify "results/$name" --sample 1
        continue
    fi
    while true; do
        set +e
        lrd run "experiments/$name.toml" --out "results/$name"
        code=$?
        set -e
        [ $code -eq 75 ] || break
        echo "reproduce.sh: $name stalled (exit 75); resuming"
    done
    [ $code -eq 0 ] || exit $code
done
$check || python scripts/readme_numbers.py
echo "reproduce.sh: ${#studies[@]} studies in $(( $(date +%s) - start )) s"
