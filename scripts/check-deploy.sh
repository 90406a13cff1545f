#!/usr/bin/env bash
# Checks the monitoring files of deploy/ with Prometheus' own tool, promtool:
#   - deploy/prometheus/alerts.yml parses and its expressions are valid PromQL
#     (`promtool check rules`), and deploy/prometheus/prometheus.yml is a valid configuration;
#   - the alerts fire as deploy/prometheus/alerts.test.yml expects (`promtool test rules`);
#   - every query of the Grafana dashboard deploy/grafana/sba.json is valid PromQL (checked
#     as recording rules of a temporary rule file).
# Which metric names they may use is checked by crates/delivery/tests/api/deploy.rs against
# a running node. Installs Debian's `prometheus` package (it ships promtool) when promtool
# is missing: apt-get as root or through sudo, like scripts/install-chromium.sh. Set
# SBA_PROMTOOL to use another promtool binary.
set -euo pipefail

SCRIPT_NAME="${0##*/}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
# shellcheck source=scripts/lib/services.sh
source "$ROOT/scripts/lib/services.sh"
cd "$ROOT"

promtool="${SBA_PROMTOOL:-promtool}"
if ! have "$promtool"; then
    [[ -z ${SBA_PROMTOOL:-} ]] || die "SBA_PROMTOOL=$promtool is not an executable"
    have apt-get || die "promtool is missing and apt-get is not available; install Prometheus' promtool yourself"
    log "promtool is missing; installing Debian's prometheus package with apt-get (it ships promtool)"
    # The package lists of a fresh machine may be missing or stale: update once, then install.
    as_root apt-get update -q >&2
    # policy-rc.d or no init system keeps the package's service from starting in containers;
    # the daemon is not needed, only promtool.
    as_root env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -q --no-install-recommends prometheus >&2 ||
        die "apt-get could not install prometheus"
    have promtool || die "prometheus was installed but promtool is not on PATH"
fi
have python3 || die "python3 is needed to read the dashboard's queries"
log "using $("$promtool" --version 2>&1 | head -n 1)"

log "promtool check config deploy/prometheus/prometheus.yml (and the alert rules it loads)"
"$promtool" check config deploy/prometheus/prometheus.yml >&2 ||
    die "deploy/prometheus/prometheus.yml or deploy/prometheus/alerts.yml is invalid (see above)"

log "promtool check rules deploy/prometheus/alerts.yml"
"$promtool" check rules deploy/prometheus/alerts.yml >&2 ||
    die "deploy/prometheus/alerts.yml is invalid (see above)"

log "promtool test rules deploy/prometheus/alerts.test.yml"
"$promtool" test rules deploy/prometheus/alerts.test.yml >&2 ||
    die "an alert of deploy/prometheus/alerts.yml does not fire as deploy/prometheus/alerts.test.yml expects (see above)"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
# Grafana's interval variables become a fixed range: promtool checks syntax, not Grafana's.
python3 - deploy/grafana/sba.json "$work/dashboard-rules.yml" <<'PY'
import json, sys

dashboard = json.load(open(sys.argv[1]))
queries = [
    (panel["title"], target["expr"])
    for panel in dashboard["panels"]
    for target in panel.get("targets", [])
]
if not queries:
    sys.exit("deploy/grafana/sba.json has no queries")
with open(sys.argv[2], "w") as out:
    out.write("groups:\n  - name: dashboard\n    rules:\n")
    for number, (title, expr) in enumerate(queries):
        for variable in ("$__rate_interval", "$__interval", "$__range"):
            expr = expr.replace(variable, "5m")
        out.write(f"      - record: dashboard_query_{number}\n")
        out.write(f"        expr: {json.dumps(expr)}\n")
        out.write(f"        labels: {{panel: {json.dumps(title)}}}\n")
print(f"{len(queries)} dashboard queries", file=sys.stderr)
PY
log "promtool check rules on the dashboard's queries"
"$promtool" check rules "$work/dashboard-rules.yml" >&2 ||
    die "a query of deploy/grafana/sba.json is not valid PromQL (the panel is in the labels above)"

log "deploy/ monitoring files are valid"
