! f08_basic: the `use mpi_f08` binding: handles as derived types, type(MPI_Status) fields,
! send/recv, isend/irecv with waitall (statuses and MPI_STATUSES_IGNORE), probe, bcast,
! allreduce with MPI_IN_PLACE, gather, alltoall, comm_dup/split/free, group_incl,
! cart_create/shift, a vector datatype, and the MPI_TAG_UB attribute.
#include "check.h"
program f08_basic
  use mpi_f08
  implicit none
  integer :: ierr, rank, nprocs, left, right, i, cnt, r2, n2, src, dst
  type(MPI_Status) :: st, sts(2)
  type(MPI_Request) :: reqs(2)
  type(MPI_Comm) :: dup, split, cart
  type(MPI_Group) :: wg, rg
  type(MPI_Datatype) :: tvec
  integer :: a(12), b(12), ranks(8), g(16)
  double precision :: d(3)
  integer(kind=MPI_ADDRESS_KIND) :: tagub
  logical :: flag

  call MPI_Init(ierr); MPI_OK
  call MPI_Comm_rank(MPI_COMM_WORLD, rank, ierr); MPI_OK
  call MPI_Comm_size(MPI_COMM_WORLD, nprocs, ierr); MPI_OK
  right = mod(rank + 1, nprocs)
  left = mod(rank + nprocs - 1, nprocs)
  do i = 1, 12
    a(i) = rank * 100 + i
  end do

  ! send/recv around the ring, rank 0 first.
  b = -1
  if (rank == 0) then
    call MPI_Send(a, 12, MPI_INTEGER, right, 3, MPI_COMM_WORLD, ierr); MPI_OK
    call MPI_Recv(b, 12, MPI_INTEGER, MPI_ANY_SOURCE, MPI_ANY_TAG, MPI_COMM_WORLD, st, ierr); MPI_OK
  else
    call MPI_Recv(b, 12, MPI_INTEGER, MPI_ANY_SOURCE, MPI_ANY_TAG, MPI_COMM_WORLD, st, ierr); MPI_OK
    call MPI_Send(a, 12, MPI_INTEGER, right, 3, MPI_COMM_WORLD) ! no ierror: optional in f08
  end if
  CHECK(st%MPI_SOURCE == left)
  CHECK(st%MPI_TAG == 3)
  call MPI_Get_count(st, MPI_INTEGER, cnt, ierr); MPI_OK
  CHECK(cnt == 12 .and. b(12) == left * 100 + 12)

  ! isend/irecv, waitall with statuses, then with MPI_STATUSES_IGNORE.
  b = -1
  call MPI_Irecv(b, 12, MPI_INTEGER, left, 4, MPI_COMM_WORLD, reqs(1), ierr); MPI_OK
  call MPI_Isend(a, 7, MPI_INTEGER, right, 4, MPI_COMM_WORLD, reqs(2), ierr); MPI_OK
  call MPI_Waitall(2, reqs, sts, ierr); MPI_OK
  CHECK(reqs(1) == MPI_REQUEST_NULL .and. reqs(2) == MPI_REQUEST_NULL)
  CHECK(sts(1)%MPI_SOURCE == left .and. sts(1)%MPI_TAG == 4)
  call MPI_Get_count(sts(1), MPI_INTEGER, cnt, ierr); MPI_OK
  CHECK(cnt == 7 .and. b(7) == left * 100 + 7 .and. b(8) == -1)
  call MPI_Irecv(b, 12, MPI_INTEGER, left, 5, MPI_COMM_WORLD, reqs(1), ierr); MPI_OK
  call MPI_Isend(a, 12, MPI_INTEGER, right, 5, MPI_COMM_WORLD, reqs(2), ierr); MPI_OK
  call MPI_Waitall(2, reqs, MPI_STATUSES_IGNORE, ierr); MPI_OK
  call MPI_Isend(a, 2, MPI_INTEGER, right, 6, MPI_COMM_WORLD, reqs(2), ierr); MPI_OK
  call MPI_Probe(left, 6, MPI_COMM_WORLD, st, ierr); MPI_OK
  call MPI_Get_count(st, MPI_INTEGER, cnt, ierr); MPI_OK
  CHECK(cnt == 2)
  call MPI_Recv(b, cnt, MPI_INTEGER, st%MPI_SOURCE, st%MPI_TAG, MPI_COMM_WORLD, MPI_STATUS_IGNORE, ierr); MPI_OK
  call MPI_Wait(reqs(2), MPI_STATUS_IGNORE, ierr); MPI_OK
  CHECK(b(2) == left * 100 + 2)

  ! collectives.
  d = -1d0
  if (rank == nprocs - 1) d = [1.5d0, 2.5d0, 3.5d0]
  call MPI_Bcast(d, 3, MPI_DOUBLE_PRECISION, nprocs - 1, MPI_COMM_WORLD, ierr); MPI_OK
  CHECK(d(1) == 1.5d0 .and. d(3) == 3.5d0)
  b(1:3) = [rank, 1, -rank]
  call MPI_Allreduce(MPI_IN_PLACE, b, 3, MPI_INTEGER, MPI_SUM, MPI_COMM_WORLD, ierr); MPI_OK
  CHECK(b(1) == nprocs * (nprocs - 1) / 2 .and. b(2) == nprocs .and. b(3) == -b(1))
  g = -1
  call MPI_Gather(a, 2, MPI_INTEGER, g, 2, MPI_INTEGER, 0, MPI_COMM_WORLD, ierr); MPI_OK
  if (rank == 0) then
    do i = 0, nprocs - 1
      CHECK(g(2 * i + 1) == i * 100 + 1 .and. g(2 * i + 2) == i * 100 + 2)
    end do
  end if
  do i = 0, nprocs - 1
    a(i + 1) = rank * 10 + i
  end do
  call MPI_Alltoall(a, 1, MPI_INTEGER, b, 1, MPI_INTEGER, MPI_COMM_WORLD, ierr); MPI_OK
  do i = 0, nprocs - 1
    CHECK(b(i + 1) == i * 10 + rank)
  end do

  ! communicators and groups.
  call MPI_Comm_dup(MPI_COMM_WORLD, dup, ierr); MPI_OK
  call MPI_Comm_split(dup, 0, -rank, split, ierr); MPI_OK
  call MPI_Comm_rank(split, r2, ierr); MPI_OK
  CHECK(r2 == nprocs - 1 - rank)
  call MPI_Comm_group(MPI_COMM_WORLD, wg, ierr); MPI_OK
  do i = 1, nprocs
    ranks(i) = nprocs - i
  end do
  call MPI_Group_incl(wg, nprocs, ranks, rg, ierr); MPI_OK
  call MPI_Group_rank(rg, r2, ierr); MPI_OK
  CHECK(r2 == nprocs - 1 - rank)
  call MPI_Group_size(rg, n2, ierr); MPI_OK
  CHECK(n2 == nprocs)
  call MPI_Group_free(rg, ierr); MPI_OK
  call MPI_Group_free(wg, ierr); MPI_OK
  CHECK(wg == MPI_GROUP_NULL)
  call MPI_Cart_create(MPI_COMM_WORLD, 1, [nprocs], [.true.], .false., cart, ierr); MPI_OK
  call MPI_Cart_shift(cart, 0, 1, src, dst, ierr); MPI_OK
  CHECK(src == left .and. dst == right)
  call MPI_Comm_free(cart, ierr); MPI_OK
  call MPI_Comm_free(split, ierr); MPI_OK
  call MPI_Comm_free(dup, ierr); MPI_OK
  CHECK(dup == MPI_COMM_NULL)

  ! a vector type: every other integer.
  do i = 1, 12
    a(i) = rank * 100 + i
  end do
  call MPI_Type_vector(6, 1, 2, MPI_INTEGER, tvec, ierr); MPI_OK
  call MPI_Type_commit(tvec, ierr); MPI_OK
  b = -1
  call MPI_Sendrecv(a, 1, tvec, right, 7, b, 6, MPI_INTEGER, left, 7, MPI_COMM_WORLD, st, ierr); MPI_OK
  do i = 1, 6
    CHECK(b(i) == left * 100 + 2 * i - 1)
  end do
  call MPI_Type_free(tvec, ierr); MPI_OK
  CHECK(tvec == MPI_DATATYPE_NULL)

  ! the MPI_TAG_UB attribute.
  call MPI_Comm_get_attr(MPI_COMM_WORLD, MPI_TAG_UB, tagub, flag, ierr); MPI_OK
  CHECK(flag .and. tagub >= 32767)

  call finish('f08_basic')
contains
#include "check_procs.h"
end program f08_basic
