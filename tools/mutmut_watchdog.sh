#!/bin/bash
# SIGXCPU (recorded as "timeout") to mutmut workers that used no CPU for 40 s: deadlocked after fork, not slow
declare -A last seen
sleep 20  # let mutmut start
while pgrep -f "mutmut run" > /dev/null; do
  for pid in $(pgrep -f "^mutmut: "); do
    cpu=$(ps -o times= -p $pid 2>/dev/null | tr -d ' ')
    [ -z "$cpu" ] && continue
    if [ "${last[$pid]}" == "$cpu" ]; then
      seen[$pid]=$(( ${seen[$pid]:-0} + 10 ))
      if [ "${seen[$pid]}" -ge 40 ]; then
        echo "$(date +%T) $pid $(ps -o args= -p $pid)" >> /tmp/watchdog.log; kill -XCPU $pid
      fi
    else
      last[$pid]=$cpu; seen[$pid]=0
    fi
  done
  sleep 10
done
