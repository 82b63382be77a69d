# Guest A of `ci/vmlab/lab verbs`: discovery, then the listening side of each check.
/host/kawarimi devices || exit 1
/host/kawarimi verbs-check --listen 7000 --iterations 200 || exit 1
echo "PERF ib_send_lat"; ib_send_lat -d rxe0 -x 1 -n 200 -s 8 | tail -3
echo "PERF ib_read_bw"; ib_read_bw -d rxe0 -x 1 -n 200 -s 1048576 | tail -3
