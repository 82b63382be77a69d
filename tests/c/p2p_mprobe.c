/* Matched probe and receive (MPI_Mprobe, MPI_Improbe, MPI_Mrecv, MPI_Imrecv): a probed
 * message is reserved for its MPI_Mrecv even when a wildcard receive is posted meanwhile. */
#include "check.h"

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    int rank, size;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    if (rank != 0) {
        int small[3] = {rank, rank * 10, rank * 100};
        MPI_OK(MPI_Send(small, 3, MPI_INT, 0, 5, MPI_COMM_WORLD));
        int n = 200000 + rank;
        int *big = malloc(sizeof(int) * n);
        for (int i = 0; i < n; i++)
            big[i] = rank ^ i;
        MPI_OK(MPI_Send(big, n, MPI_INT, 0, 6, MPI_COMM_WORLD));
        free(big);
    } else {
        for (int k = 1; k < size; k++) {
            MPI_Message msg;
            MPI_Status st;
            MPI_OK(MPI_Mprobe(MPI_ANY_SOURCE, 5, MPI_COMM_WORLD, &msg, &st));
            int count;
            MPI_OK(MPI_Get_count(&st, MPI_INT, &count));
            CHECK(count == 3 && st.MPI_TAG == 5);
            /* A wildcard receive posted now must not take the probed message. */
            int other[3] = {-1, -1, -1};
            MPI_Request rq;
            MPI_OK(MPI_Irecv(other, 3, MPI_INT, MPI_ANY_SOURCE, 5, MPI_COMM_WORLD, &rq));
            int got[3];
            MPI_Status st2;
            MPI_OK(MPI_Mrecv(got, 3, MPI_INT, &msg, &st2));
            CHECK(msg == MPI_MESSAGE_NULL);
            CHECK(st2.MPI_SOURCE == st.MPI_SOURCE);
            CHECK(got[0] == st.MPI_SOURCE && got[1] == st.MPI_SOURCE * 10 && got[2] == st.MPI_SOURCE * 100);
            int flag;
            MPI_OK(MPI_Test(&rq, &flag, MPI_STATUS_IGNORE));
            if (!flag) MPI_OK(MPI_Cancel(&rq));
            MPI_OK(MPI_Wait(&rq, &st2));
            int cancelled;
            MPI_OK(MPI_Test_cancelled(&st2, &cancelled));
            if (!cancelled) {
                /* It took another sender's small message: take that one back out of the count. */
                CHECK(other[1] == other[0] * 10);
                k++;
            }
        }
        /* The large messages, by nonblocking matched receive. */
        for (int k = 1; k < size; k++) {
            MPI_Message msg;
            MPI_Status st;
            int flag = 0;
            while (!flag)
                MPI_OK(MPI_Improbe(MPI_ANY_SOURCE, 6, MPI_COMM_WORLD, &flag, &msg, &st));
            int n;
            MPI_OK(MPI_Get_count(&st, MPI_INT, &n));
            CHECK(n == 200000 + st.MPI_SOURCE);
            int *big = malloc(sizeof(int) * n);
            MPI_Request rq;
            MPI_OK(MPI_Imrecv(big, n, MPI_INT, &msg, &rq));
            MPI_OK(MPI_Wait(&rq, MPI_STATUS_IGNORE));
            for (int i = 0; i < n; i++)
                CHECKF(big[i] == (st.MPI_SOURCE ^ i), "from %d at %d", st.MPI_SOURCE, i);
            free(big);
        }
        /* MPI_PROC_NULL gives MPI_MESSAGE_NO_PROC, whose receive completes at once. */
        MPI_Message np;
        MPI_Status st;
        MPI_OK(MPI_Mprobe(MPI_PROC_NULL, 0, MPI_COMM_WORLD, &np, &st));
        CHECK(np == MPI_MESSAGE_NO_PROC && st.MPI_SOURCE == MPI_PROC_NULL);
        int dummy;
        MPI_OK(MPI_Mrecv(&dummy, 1, MPI_INT, &np, &st));
        CHECK(st.MPI_SOURCE == MPI_PROC_NULL);
    }
    return finish("p2p_mprobe");
}
