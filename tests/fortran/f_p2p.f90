! f_p2p: point-to-point from Fortran with the old `include 'mpif.h'` binding: blocking
! send/recv in a ring, status fields and MPI_Get_count, MPI_STATUS_IGNORE, isend/irecv
! with wait and waitall (with statuses and with MPI_STATUSES_IGNORE), waitany, test,
! sendrecv and sendrecv_replace, MPI_ANY_SOURCE/MPI_ANY_TAG, probe and iprobe,
! MPI_PROC_NULL, a message above the eager limit, ssend, and persistent requests
! (send_init/recv_init, startall, wait, test, request_free).
#include "check.h"
program f_p2p
  implicit none
  include 'mpif.h'
  integer :: ierr, rank, nprocs, left, right, i, k, cnt, src
  integer :: status(MPI_STATUS_SIZE)
  integer :: statuses(MPI_STATUS_SIZE, 4)
  integer :: reqs(4)
  integer :: sbuf(16), rbuf(16), rbuf2(16)
  integer, allocatable :: big(:), bigr(:), seen(:)
  logical :: flag
  integer :: idx, done, outcount, indices(2), somestat(MPI_STATUS_SIZE, 2)
  integer, parameter :: nbig = 300000

  call MPI_Init(ierr); MPI_OK
  call MPI_Comm_rank(MPI_COMM_WORLD, rank, ierr); MPI_OK
  call MPI_Comm_size(MPI_COMM_WORLD, nprocs, ierr); MPI_OK
  CHECK(nprocs >= 2)
  right = mod(rank + 1, nprocs)
  left = mod(rank + nprocs - 1, nprocs)

  ! Blocking ring: rank 0 sends first, the others receive first.
  do i = 1, 16
    sbuf(i) = rank * 100 + i
  end do
  rbuf = -1
  if (rank == 0) then
    call MPI_Send(sbuf, 16, MPI_INTEGER, right, 7, MPI_COMM_WORLD, ierr); MPI_OK
    call MPI_Recv(rbuf, 16, MPI_INTEGER, left, 7, MPI_COMM_WORLD, status, ierr); MPI_OK
  else
    call MPI_Recv(rbuf, 16, MPI_INTEGER, left, 7, MPI_COMM_WORLD, status, ierr); MPI_OK
    call MPI_Send(sbuf, 16, MPI_INTEGER, right, 7, MPI_COMM_WORLD, ierr); MPI_OK
  end if
  CHECK(status(MPI_SOURCE) == left)
  CHECK(status(MPI_TAG) == 7)
  call MPI_Get_count(status, MPI_INTEGER, cnt, ierr); MPI_OK
  CHECK(cnt == 16)
  do i = 1, 16
    CHECK(rbuf(i) == left * 100 + i)
  end do

  ! A shorter message than the buffer, received with MPI_STATUS_IGNORE.
  rbuf = -1
  if (rank == 0) then
    call MPI_Send(sbuf, 5, MPI_INTEGER, right, 8, MPI_COMM_WORLD, ierr); MPI_OK
    call MPI_Recv(rbuf, 16, MPI_INTEGER, left, 8, MPI_COMM_WORLD, MPI_STATUS_IGNORE, ierr); MPI_OK
  else
    call MPI_Recv(rbuf, 16, MPI_INTEGER, left, 8, MPI_COMM_WORLD, MPI_STATUS_IGNORE, ierr); MPI_OK
    call MPI_Send(sbuf, 5, MPI_INTEGER, right, 8, MPI_COMM_WORLD, ierr); MPI_OK
  end if
  do i = 1, 5
    CHECK(rbuf(i) == left * 100 + i)
  end do
  CHECK(rbuf(6) == -1)

  ! isend/irecv both ways around the ring, waitall with statuses.
  rbuf = -1
  rbuf2 = -1
  call MPI_Irecv(rbuf, 16, MPI_INTEGER, left, 11, MPI_COMM_WORLD, reqs(1), ierr); MPI_OK
  call MPI_Irecv(rbuf2, 16, MPI_INTEGER, right, 12, MPI_COMM_WORLD, reqs(2), ierr); MPI_OK
  call MPI_Isend(sbuf, 16, MPI_INTEGER, right, 11, MPI_COMM_WORLD, reqs(3), ierr); MPI_OK
  call MPI_Isend(sbuf, 9, MPI_INTEGER, left, 12, MPI_COMM_WORLD, reqs(4), ierr); MPI_OK
  call MPI_Waitall(4, reqs, statuses, ierr); MPI_OK
  do k = 1, 4
    CHECK(reqs(k) == MPI_REQUEST_NULL)
  end do
  CHECK(statuses(MPI_SOURCE, 1) == left .and. statuses(MPI_TAG, 1) == 11)
  CHECK(statuses(MPI_SOURCE, 2) == right .and. statuses(MPI_TAG, 2) == 12)
  call MPI_Get_count(statuses(1, 2), MPI_INTEGER, cnt, ierr); MPI_OK
  CHECK(cnt == 9)
  do i = 1, 16
    CHECK(rbuf(i) == left * 100 + i)
  end do
  do i = 1, 9
    CHECK(rbuf2(i) == right * 100 + i)
  end do

  ! The same with MPI_STATUSES_IGNORE, then single waits and a test loop.
  rbuf = -1
  call MPI_Irecv(rbuf, 16, MPI_INTEGER, left, 13, MPI_COMM_WORLD, reqs(1), ierr); MPI_OK
  call MPI_Isend(sbuf, 16, MPI_INTEGER, right, 13, MPI_COMM_WORLD, reqs(2), ierr); MPI_OK
  call MPI_Waitall(2, reqs, MPI_STATUSES_IGNORE, ierr); MPI_OK
  CHECK(rbuf(16) == left * 100 + 16)
  rbuf = -1
  call MPI_Irecv(rbuf, 16, MPI_INTEGER, left, 14, MPI_COMM_WORLD, reqs(1), ierr); MPI_OK
  call MPI_Isend(sbuf, 3, MPI_INTEGER, right, 14, MPI_COMM_WORLD, reqs(2), ierr); MPI_OK
  call MPI_Wait(reqs(2), MPI_STATUS_IGNORE, ierr); MPI_OK
  CHECK(reqs(2) == MPI_REQUEST_NULL)
  flag = .false.
  do while (.not. flag)
    call MPI_Test(reqs(1), flag, status, ierr); MPI_OK
  end do
  CHECK(reqs(1) == MPI_REQUEST_NULL)
  CHECK(status(MPI_SOURCE) == left .and. status(MPI_TAG) == 14)
  call MPI_Get_count(status, MPI_INTEGER, cnt, ierr); MPI_OK
  CHECK(cnt == 3 .and. rbuf(3) == left * 100 + 3 .and. rbuf(4) == -1)
  rbuf = -1
  call MPI_Irecv(rbuf, 16, MPI_INTEGER, left, 15, MPI_COMM_WORLD, reqs(1), ierr); MPI_OK
  call MPI_Send(sbuf, 4, MPI_INTEGER, right, 15, MPI_COMM_WORLD, ierr); MPI_OK
  call MPI_Wait(reqs(1), status, ierr); MPI_OK
  CHECK(status(MPI_SOURCE) == left .and. status(MPI_TAG) == 15)
  CHECK(rbuf(4) == left * 100 + 4)

  ! waitany: two receives, the index of the completed one is 1-based.
  rbuf = -1
  rbuf2 = -1
  call MPI_Irecv(rbuf, 16, MPI_INTEGER, left, 16, MPI_COMM_WORLD, reqs(1), ierr); MPI_OK
  call MPI_Irecv(rbuf2, 16, MPI_INTEGER, right, 17, MPI_COMM_WORLD, reqs(2), ierr); MPI_OK
  call MPI_Send(sbuf, 2, MPI_INTEGER, right, 16, MPI_COMM_WORLD, ierr); MPI_OK
  call MPI_Send(sbuf, 2, MPI_INTEGER, left, 17, MPI_COMM_WORLD, ierr); MPI_OK
  do k = 1, 2
    call MPI_Waitany(2, reqs, i, status, ierr); MPI_OK
    CHECK(i == 1 .or. i == 2)
    CHECK(reqs(i) == MPI_REQUEST_NULL)
    if (i == 1) then
      CHECK(status(MPI_SOURCE) == left .and. status(MPI_TAG) == 16)
    else
      CHECK(status(MPI_SOURCE) == right .and. status(MPI_TAG) == 17)
    end if
  end do
  CHECK(rbuf(2) == left * 100 + 2 .and. rbuf2(2) == right * 100 + 2)

  ! sendrecv and sendrecv_replace around the ring.
  rbuf = -1
  call MPI_Sendrecv(sbuf, 16, MPI_INTEGER, right, 21, rbuf, 16, MPI_INTEGER, left, 21, &
                    MPI_COMM_WORLD, status, ierr); MPI_OK
  CHECK(status(MPI_SOURCE) == left .and. status(MPI_TAG) == 21)
  CHECK(rbuf(1) == left * 100 + 1 .and. rbuf(16) == left * 100 + 16)
  rbuf = sbuf
  call MPI_Sendrecv_replace(rbuf, 16, MPI_INTEGER, left, 22, right, 22, MPI_COMM_WORLD, &
                            MPI_STATUS_IGNORE, ierr); MPI_OK
  CHECK(rbuf(7) == right * 100 + 7)

  ! MPI_ANY_SOURCE / MPI_ANY_TAG: every other rank sends to rank 0.
  if (rank == 0) then
    allocate (seen(nprocs))
    seen = 0
    do k = 1, nprocs - 1
      rbuf = -1
      call MPI_Recv(rbuf, 16, MPI_INTEGER, MPI_ANY_SOURCE, MPI_ANY_TAG, MPI_COMM_WORLD, status, ierr); MPI_OK
      src = status(MPI_SOURCE)
      CHECK(src >= 1 .and. src < nprocs)
      CHECK(status(MPI_TAG) == 1000 + src)
      call MPI_Get_count(status, MPI_INTEGER, cnt, ierr); MPI_OK
      CHECK(cnt == src)
      CHECK(rbuf(1) == src * 100 + 1 .and. rbuf(src) == src * 100 + src)
      seen(src + 1) = seen(src + 1) + 1
    end do
    do k = 2, nprocs
      CHECK(seen(k) == 1)
    end do
    deallocate (seen)
  else
    call MPI_Send(sbuf, rank, MPI_INTEGER, 0, 1000 + rank, MPI_COMM_WORLD, ierr); MPI_OK
  end if

  ! probe and iprobe: rank 0 learns the size first, then receives exactly that. The
  ! barrier keeps these messages away from the MPI_ANY_TAG receives above.
  call MPI_Barrier(MPI_COMM_WORLD, ierr); MPI_OK
  if (rank == 0) then
    do k = 1, nprocs - 1
      call MPI_Probe(MPI_ANY_SOURCE, 99, MPI_COMM_WORLD, status, ierr); MPI_OK
      src = status(MPI_SOURCE)
      call MPI_Get_count(status, MPI_INTEGER, cnt, ierr); MPI_OK
      CHECK(cnt == src + 2)
      allocate (big(cnt))
      call MPI_Recv(big, cnt, MPI_INTEGER, src, 99, MPI_COMM_WORLD, status, ierr); MPI_OK
      CHECK(big(cnt) == src * 100 + cnt)
      deallocate (big)
    end do
    flag = .true.
    call MPI_Iprobe(MPI_ANY_SOURCE, 99, MPI_COMM_WORLD, flag, status, ierr); MPI_OK
    CHECK(.not. flag)
  else
    call MPI_Send(sbuf, rank + 2, MPI_INTEGER, 0, 99, MPI_COMM_WORLD, ierr); MPI_OK
  end if

  ! MPI_PROC_NULL: completes at once with source MPI_PROC_NULL and count 0.
  call MPI_Send(sbuf, 16, MPI_INTEGER, MPI_PROC_NULL, 5, MPI_COMM_WORLD, ierr); MPI_OK
  call MPI_Recv(rbuf, 16, MPI_INTEGER, MPI_PROC_NULL, 5, MPI_COMM_WORLD, status, ierr); MPI_OK
  CHECK(status(MPI_SOURCE) == MPI_PROC_NULL .and. status(MPI_TAG) == MPI_ANY_TAG)
  call MPI_Get_count(status, MPI_INTEGER, cnt, ierr); MPI_OK
  CHECK(cnt == 0)

  ! A message far above the eager limit (1.2 MB), isend/irecv around the ring.
  allocate (big(nbig), bigr(nbig))
  do i = 1, nbig
    big(i) = ieor(i, rank * 65536)
  end do
  bigr = -1
  call MPI_Irecv(bigr, nbig, MPI_INTEGER, left, 31, MPI_COMM_WORLD, reqs(1), ierr); MPI_OK
  call MPI_Isend(big, nbig, MPI_INTEGER, right, 31, MPI_COMM_WORLD, reqs(2), ierr); MPI_OK
  call MPI_Waitall(2, reqs, statuses, ierr); MPI_OK
  call MPI_Get_count(statuses(1, 1), MPI_INTEGER, cnt, ierr); MPI_OK
  CHECK(cnt == nbig)
  do i = 1, nbig
    if (bigr(i) /= ieor(i, left * 65536)) then
      CHECK(bigr(i) == ieor(i, left * 65536))
    end if
  end do
  deallocate (big, bigr)

  ! ssend pairs up with a posted receive.
  rbuf = -1
  call MPI_Irecv(rbuf, 16, MPI_INTEGER, left, 41, MPI_COMM_WORLD, reqs(1), ierr); MPI_OK
  call MPI_Ssend(sbuf, 16, MPI_INTEGER, right, 41, MPI_COMM_WORLD, ierr); MPI_OK
  call MPI_Wait(reqs(1), MPI_STATUS_IGNORE, ierr); MPI_OK
  CHECK(rbuf(16) == left * 100 + 16)

  ! persistent requests: started twice, completed by wait and by test; they stay
  ! allocated until MPI_Request_free.
  do k = 1, 2
    rbuf = -1
    if (k == 1) then
      call MPI_Recv_init(rbuf, 16, MPI_INTEGER, left, 51, MPI_COMM_WORLD, reqs(1), ierr); MPI_OK
      call MPI_Send_init(sbuf, 16, MPI_INTEGER, right, 51, MPI_COMM_WORLD, reqs(2), ierr); MPI_OK
    end if
    call MPI_Startall(2, reqs, ierr); MPI_OK
    call MPI_Wait(reqs(2), MPI_STATUS_IGNORE, ierr); MPI_OK
    CHECK(reqs(2) /= MPI_REQUEST_NULL)
    flag = .false.
    do while (.not. flag)
      call MPI_Test(reqs(1), flag, status, ierr); MPI_OK
    end do
    CHECK(reqs(1) /= MPI_REQUEST_NULL)
    CHECK(status(MPI_SOURCE) == left .and. status(MPI_TAG) == 51)
    CHECK(rbuf(16) == left * 100 + 16)
  end do
  ! the same persistent requests completed by the array forms: waitall, testall,
  ! waitany, testany, waitsome, testsome; each keeps them allocated (and their handles
  ! unchanged), returns one-based indices, and fills the statuses it is asked for.
  do k = 1, 6
    rbuf = -1
    statuses = -1
    call MPI_Startall(2, reqs, ierr); MPI_OK
    select case (k)
    case (1)
      call MPI_Waitall(2, reqs, statuses, ierr); MPI_OK
    case (2)
      flag = .false.
      do while (.not. flag)
        call MPI_Testall(2, reqs, flag, statuses, ierr); MPI_OK
      end do
    case (3, 4)
      done = 0
      do while (done < 2)
        flag = .true.
        if (k == 3) then
          call MPI_Waitany(2, reqs, idx, status, ierr); MPI_OK
        else
          call MPI_Testany(2, reqs, idx, flag, status, ierr); MPI_OK
        end if
        if (flag .and. idx /= MPI_UNDEFINED) then
          CHECK(idx == 1 .or. idx == 2)
          statuses(:, idx) = status
          done = done + 1
        end if
        ! MPI_UNDEFINED with flag set: every request is inactive, both have completed.
        if (flag .and. idx == MPI_UNDEFINED) done = 2
      end do
    case (5, 6)
      done = 0
      do while (done < 2)
        if (k == 5) then
          call MPI_Waitsome(2, reqs, outcount, indices, somestat, ierr); MPI_OK
        else
          call MPI_Testsome(2, reqs, outcount, indices, somestat, ierr); MPI_OK
        end if
        if (outcount == MPI_UNDEFINED) exit
        do i = 1, outcount
          CHECK(indices(i) == 1 .or. indices(i) == 2)
          statuses(:, indices(i)) = somestat(:, i)
        end do
        done = done + outcount
      end do
    end select
    CHECK(reqs(1) /= MPI_REQUEST_NULL .and. reqs(2) /= MPI_REQUEST_NULL)
    CHECK(statuses(MPI_SOURCE, 1) == left .and. statuses(MPI_TAG, 1) == 51)
    CHECK(rbuf(16) == left * 100 + 16)
  end do
  call MPI_Request_free(reqs(1), ierr); MPI_OK
  call MPI_Request_free(reqs(2), ierr); MPI_OK
  CHECK(reqs(1) == MPI_REQUEST_NULL .and. reqs(2) == MPI_REQUEST_NULL)

  call finish('f_p2p')
contains
#include "check_procs.h"
end program f_p2p
