#!/usr/bin/env bash
# Markdown summary of a cargo-mutants run (scripts/mutants.sh) for CI's job summary: the
# count of each outcome, then every missed and timed-out mutant.
#
#   scripts/mutants-summary.sh [mutants.out] >> "$GITHUB_STEP_SUMMARY"
set -euo pipefail

out=${1:-mutants.out}
if [[ ! -d $out ]]; then
    echo "## Mutants"
    echo
    echo "No results: \`$out\` does not exist (the run did not start, or found no mutant)."
    exit 0
fi

count() {
    if [[ -f $out/$1.txt ]]; then grep -c . "$out/$1.txt" || true; else echo 0; fi
}

echo "## Mutants"
echo
echo "| caught | missed | timeout | unviable |"
echo "|---:|---:|---:|---:|"
echo "| $(count caught) | $(count missed) | $(count timeout) | $(count unviable) |"
for outcome in missed timeout; do
    if [[ -s $out/$outcome.txt ]]; then
        echo
        if [[ $outcome == missed ]]; then
            echo "### Missed: no test failed with these changes"
        else
            echo "### Timed out"
        fi
        echo
        echo '```'
        cat "$out/$outcome.txt"
        echo '```'
    fi
done
