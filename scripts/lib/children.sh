# Shared by scripts/demo.sh and scripts/cluster.sh (bash, sourced): the
# processes a script starts, stopped in reverse order when it ends.

child_pids=()
child_names=()
# When set, each started child is recorded there as "NAME PID".
children_pidfile=""

start_child() { # NAME LOG COMMAND...
    local name=$1 log=$2
    shift 2
    "$@" </dev/null >"$log" 2>&1 &
    child_pids+=("$!")
    child_names+=("$name")
    if [ -n "$children_pidfile" ]; then
        echo "$name $!" >>"$children_pidfile"
    fi
}

stop_children() { # LABEL
    local i
    for ((i = ${#child_pids[@]} - 1; i >= 0; i--)); do
        if kill -0 "${child_pids[$i]}" 2>/dev/null; then
            echo "$1: stopping ${child_names[$i]}"
            kill -TERM "${child_pids[$i]}" 2>/dev/null || true
            wait "${child_pids[$i]}" 2>/dev/null || true
        fi
    done
}
