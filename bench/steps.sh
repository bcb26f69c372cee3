# Shared by bench/gpu_*_run.sh (sourced, not run): steps under time limits, each with its own log,
# and the lines that matter copied to a summary.
#
# The sourcing script sets STEP_LINES (an extended regex: the lines of a step's log that go to the
# summary). From the environment: PYTHON (default python3), DRY (1: a CPU-only check of the run),
# OUT (where logs and the summary go; default a temporary directory) and STEPS ("name ...": only
# the steps named run).

PY=${PYTHON:-python3}
DRY=${DRY:-0}
LOGS=${OUT:-$(mktemp -d)}
mkdir -p "$LOGS"
SUMMARY="$LOGS/summary.md"
: >"$SUMMARY"
started=$SECONDS
failed=0

say() { echo "$*" | tee -a "$SUMMARY"; }

named() { [[ " ${STEPS:-} " == *" $1 "* ]]; }

# step LIMIT NAME COMMAND...: runs COMMAND with its full output in $LOGS/NAME.log, unless STEPS
# leaves NAME out. A step that fails or runs out of time shows its log's tail and sets failed=1;
# the run goes on with the next step. On the limit the step gets SIGINT, so a bench can stop the
# services it started before it exits.
step() {
    local limit=$1 name=$2
    shift 2
    if [[ -n ${STEPS:-} ]] && ! named "$name"; then
        return 0
    fi
    say ""
    say "## $name ($((SECONDS - started)) s in): $*"
    if ! timeout -s INT -k 60 "$limit" "$@" >"$LOGS/$name.log" 2>&1; then
        tail -n 30 "$LOGS/$name.log"
        say "FAILED or over ${limit} s: $name (log: $LOGS/$name.log)"
        failed=1
    fi
    grep -E "$STEP_LINES" "$LOGS/$name.log" | tee -a "$SUMMARY" || true
}
