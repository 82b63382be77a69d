# Guest B of `ci/vmlab/lab verbs`: the connecting side, started once A listens.
/host/kawarimi devices || exit 1
sleep 3
/host/kawarimi verbs-check --connect 10.9.0.1:7000 --iterations 200 || exit 1
sleep 3; echo "PERF ib_send_lat"; ib_send_lat -d rxe0 -x 1 -n 200 -s 8 10.9.0.1 | tail -3
sleep 3; echo "PERF ib_read_bw"; ib_read_bw -d rxe0 -x 1 -n 200 -s 1048576 10.9.0.1 | tail -3
