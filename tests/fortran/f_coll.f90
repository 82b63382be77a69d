! f_coll: collectives from Fortran (`use mpi`): barrier, bcast, reduce at every root,
! allreduce (INTEGER, REAL, DOUBLE PRECISION, LOGICAL, DOUBLE COMPLEX, MPI_2INTEGER with
! MAXLOC), MPI_IN_PLACE in allreduce, reduce, allgather and gather, gather(v),
! scatter(v), allgather, alltoall, scan and exscan, and a user op made by MPI_OP_CREATE.
#include "check.h"
program f_coll
  use mpi
  implicit none
  integer :: ierr, rank, nprocs, root, i, j, n, off
  integer :: ibuf(8), ires(8)
  real :: rbuf(4), rres(4)
  double precision :: dbuf(5), dres(5)
  double complex :: zbuf(2), zres(2)
  logical :: lbuf(2), lres(2)
  integer :: pair(2, 3), pres(2, 3)
  integer, allocatable :: gath(:), counts(:), displs(:), sendv(:), recvv(:), a2a_s(:), a2a_r(:)
  integer :: expect, uop
  external :: imax_op

  call MPI_Init(ierr); MPI_OK
  call MPI_Comm_rank(MPI_COMM_WORLD, rank, ierr); MPI_OK
  call MPI_Comm_size(MPI_COMM_WORLD, nprocs, ierr); MPI_OK
  n = nprocs

  call MPI_Barrier(MPI_COMM_WORLD, ierr); MPI_OK

  ! bcast from every root, INTEGER and DOUBLE PRECISION.
  do root = 0, n - 1
    ibuf = -1
    dbuf = -1d0
    if (rank == root) then
      do i = 1, 8
        ibuf(i) = root * 10 + i
      end do
      do i = 1, 5
        dbuf(i) = root + i * 0.25d0
      end do
    end if
    call MPI_Bcast(ibuf, 8, MPI_INTEGER, root, MPI_COMM_WORLD, ierr); MPI_OK
    call MPI_Bcast(dbuf, 5, MPI_DOUBLE_PRECISION, root, MPI_COMM_WORLD, ierr); MPI_OK
    do i = 1, 8
      CHECK(ibuf(i) == root * 10 + i)
    end do
    do i = 1, 5
      CHECK(dbuf(i) == root + i * 0.25d0)
    end do
  end do

  ! reduce at every root: SUM and MAX of INTEGER, SUM of REAL; then in place at the root.
  do root = 0, n - 1
    do i = 1, 8
      ibuf(i) = rank * i + 1
    end do
    ires = -1
    call MPI_Reduce(ibuf, ires, 8, MPI_INTEGER, MPI_SUM, root, MPI_COMM_WORLD, ierr); MPI_OK
    if (rank == root) then
      do i = 1, 8
        CHECK(ires(i) == i * n * (n - 1) / 2 + n)
      end do
    end if
    call MPI_Reduce(ibuf, ires, 8, MPI_INTEGER, MPI_MAX, root, MPI_COMM_WORLD, ierr); MPI_OK
    if (rank == root) then
      do i = 1, 8
        CHECK(ires(i) == (n - 1) * i + 1)
      end do
    end if
    rbuf = real(rank + 1)
    call MPI_Reduce(rbuf, rres, 4, MPI_REAL, MPI_SUM, root, MPI_COMM_WORLD, ierr); MPI_OK
    if (rank == root) then
      CHECK(all(rres == real(n * (n + 1) / 2)))
    end if
    if (rank == root) then
      ires = ibuf
      call MPI_Reduce(MPI_IN_PLACE, ires, 8, MPI_INTEGER, MPI_SUM, root, MPI_COMM_WORLD, ierr); MPI_OK
      do i = 1, 8
        CHECK(ires(i) == i * n * (n - 1) / 2 + n)
      end do
    else
      call MPI_Reduce(ibuf, ires, 8, MPI_INTEGER, MPI_SUM, root, MPI_COMM_WORLD, ierr); MPI_OK
    end if
  end do

  ! allreduce, several Fortran types.
  do i = 1, 8
    ibuf(i) = rank + i
  end do
  call MPI_Allreduce(ibuf, ires, 8, MPI_INTEGER, MPI_SUM, MPI_COMM_WORLD, ierr); MPI_OK
  do i = 1, 8
    CHECK(ires(i) == n * (n - 1) / 2 + n * i)
  end do
  call MPI_Allreduce(ibuf, ires, 8, MPI_INTEGER, MPI_MIN, MPI_COMM_WORLD, ierr); MPI_OK
  do i = 1, 8
    CHECK(ires(i) == i)
  end do
  dbuf = 0.5d0 * (rank + 1)
  call MPI_Allreduce(dbuf, dres, 5, MPI_DOUBLE_PRECISION, MPI_PROD, MPI_COMM_WORLD, ierr); MPI_OK
  dbuf(1) = 1d0
  do i = 1, n
    dbuf(1) = dbuf(1) * 0.5d0 * i
  end do
  CHECK(all(dres == dbuf(1)))
  zbuf(1) = dcmplx(rank, 1)
  zbuf(2) = dcmplx(1, -rank)
  call MPI_Allreduce(zbuf, zres, 2, MPI_DOUBLE_COMPLEX, MPI_SUM, MPI_COMM_WORLD, ierr); MPI_OK
  CHECK(zres(1) == dcmplx(n * (n - 1) / 2, n))
  CHECK(zres(2) == dcmplx(n, -n * (n - 1) / 2))
  lbuf(1) = .true.
  lbuf(2) = (rank == n - 1)
  call MPI_Allreduce(lbuf, lres, 2, MPI_LOGICAL, MPI_LAND, MPI_COMM_WORLD, ierr); MPI_OK
  CHECK(lres(1) .and. .not. lres(2))
  call MPI_Allreduce(lbuf, lres, 2, MPI_LOGICAL, MPI_LOR, MPI_COMM_WORLD, ierr); MPI_OK
  CHECK(lres(1) .and. lres(2))
  ! MAXLOC/MINLOC on (value, index) pairs.
  do j = 1, 3
    pair(1, j) = mod(rank * 7 + j, n)
    pair(2, j) = rank
  end do
  call MPI_Allreduce(pair, pres, 3, MPI_2INTEGER, MPI_MAXLOC, MPI_COMM_WORLD, ierr); MPI_OK
  do j = 1, 3
    CHECK(pres(1, j) == n - 1)
    ! lowest rank with the maximum value
    do i = 0, n - 1
      if (mod(i * 7 + j, n) == n - 1) exit
    end do
    CHECK(pres(2, j) == i)
  end do
  call MPI_Allreduce(pair, pres, 3, MPI_2INTEGER, MPI_MINLOC, MPI_COMM_WORLD, ierr); MPI_OK
  do j = 1, 3
    CHECK(pres(1, j) == 0)
  end do

  ! allreduce with MPI_IN_PLACE.
  do i = 1, 8
    ires(i) = rank * i
  end do
  call MPI_Allreduce(MPI_IN_PLACE, ires, 8, MPI_INTEGER, MPI_SUM, MPI_COMM_WORLD, ierr); MPI_OK
  do i = 1, 8
    CHECK(ires(i) == i * n * (n - 1) / 2)
  end do
  dres = dble(rank)
  call MPI_Allreduce(MPI_IN_PLACE, dres, 5, MPI_DOUBLE_PRECISION, MPI_MAX, MPI_COMM_WORLD, ierr); MPI_OK
  CHECK(all(dres == dble(n - 1)))

  ! gather / gatherv / scatter / scatterv at every root.
  allocate (gath(3 * n), counts(n), displs(n), sendv(n + 1), recvv(n * (n + 1)))
  do root = 0, n - 1
    ibuf(1:3) = [rank, rank * 2, rank * 3]
    gath = -1
    call MPI_Gather(ibuf, 3, MPI_INTEGER, gath, 3, MPI_INTEGER, root, MPI_COMM_WORLD, ierr); MPI_OK
    if (rank == root) then
      do i = 0, n - 1
        CHECK(gath(3 * i + 1) == i .and. gath(3 * i + 2) == 2 * i .and. gath(3 * i + 3) == 3 * i)
      end do
      ! in place at the root: the root's own block is already there
      gath(3 * root + 1:3 * root + 3) = [root, root * 2, root * 3]
      call MPI_Gather(MPI_IN_PLACE, 3, MPI_INTEGER, gath, 3, MPI_INTEGER, root, MPI_COMM_WORLD, ierr); MPI_OK
      do i = 0, n - 1
        CHECK(gath(3 * i + 3) == 3 * i)
      end do
    else
      call MPI_Gather(ibuf, 3, MPI_INTEGER, gath, 3, MPI_INTEGER, root, MPI_COMM_WORLD, ierr); MPI_OK
    end if

    ! gatherv: rank i contributes i+1 values, placed in reverse rank order with gaps.
    do i = 0, n - 1
      counts(i + 1) = i + 1
    end do
    off = 0
    do i = n - 1, 0, -1
      displs(i + 1) = off
      off = off + counts(i + 1) + 1
    end do
    do i = 1, rank + 1
      sendv(i) = 1000 * rank + i
    end do
    recvv = -7
    call MPI_Gatherv(sendv, rank + 1, MPI_INTEGER, recvv, counts, displs, MPI_INTEGER, root, &
                     MPI_COMM_WORLD, ierr); MPI_OK
    if (rank == root) then
      do i = 0, n - 1
        do j = 1, i + 1
          CHECK(recvv(displs(i + 1) + j) == 1000 * i + j)
        end do
        CHECK(recvv(displs(i + 1) + i + 2) == -7)
      end do
    end if

    ! scatter: block i to rank i.
    if (rank == root) then
      do i = 1, 3 * n
        gath(i) = 50 * root + i
      end do
    end if
    ibuf = -1
    call MPI_Scatter(gath, 3, MPI_INTEGER, ibuf, 3, MPI_INTEGER, root, MPI_COMM_WORLD, ierr); MPI_OK
    do i = 1, 3
      CHECK(ibuf(i) == 50 * root + 3 * rank + i)
    end do

    ! scatterv with the gatherv layout: rank i gets i+1 values.
    if (rank == root) then
      do i = 0, n - 1
        do j = 1, i + 1
          recvv(displs(i + 1) + j) = 7 * i + j + root
        end do
      end do
    end if
    sendv = -1
    call MPI_Scatterv(recvv, counts, displs, MPI_INTEGER, sendv, rank + 1, MPI_INTEGER, root, &
                      MPI_COMM_WORLD, ierr); MPI_OK
    do j = 1, rank + 1
      CHECK(sendv(j) == 7 * rank + j + root)
    end do
    CHECK(sendv(rank + 2) == -1)
  end do

  ! allgather, then allgather in place.
  ibuf(1:3) = [rank + 1, -rank, 42]
  gath = -1
  call MPI_Allgather(ibuf, 3, MPI_INTEGER, gath, 3, MPI_INTEGER, MPI_COMM_WORLD, ierr); MPI_OK
  do i = 0, n - 1
    CHECK(gath(3 * i + 1) == i + 1 .and. gath(3 * i + 2) == -i .and. gath(3 * i + 3) == 42)
  end do
  gath = -1
  gath(3 * rank + 1:3 * rank + 3) = [rank, rank, rank]
  call MPI_Allgather(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, gath, 3, MPI_INTEGER, MPI_COMM_WORLD, ierr); MPI_OK
  do i = 0, n - 1
    CHECK(all(gath(3 * i + 1:3 * i + 3) == i))
  end do

  ! alltoall: element j of rank i's send buffer goes to rank j.
  allocate (a2a_s(2 * n), a2a_r(2 * n))
  do j = 0, n - 1
    a2a_s(2 * j + 1) = 100 * rank + j
    a2a_s(2 * j + 2) = -(100 * rank + j)
  end do
  a2a_r = -1
  call MPI_Alltoall(a2a_s, 2, MPI_INTEGER, a2a_r, 2, MPI_INTEGER, MPI_COMM_WORLD, ierr); MPI_OK
  do i = 0, n - 1
    CHECK(a2a_r(2 * i + 1) == 100 * i + rank .and. a2a_r(2 * i + 2) == -(100 * i + rank))
  end do

  ! scan and exscan.
  ibuf(1:2) = [rank + 1, 2]
  call MPI_Scan(ibuf, ires, 2, MPI_INTEGER, MPI_SUM, MPI_COMM_WORLD, ierr); MPI_OK
  CHECK(ires(1) == (rank + 1) * (rank + 2) / 2 .and. ires(2) == 2 * (rank + 1))
  ires(1:2) = -5
  call MPI_Exscan(ibuf, ires, 2, MPI_INTEGER, MPI_SUM, MPI_COMM_WORLD, ierr); MPI_OK
  if (rank > 0) then
    expect = rank * (rank + 1) / 2
    CHECK(ires(1) == expect .and. ires(2) == 2 * rank)
  end if
  dbuf(1) = dble(rank + 1)
  call MPI_Scan(dbuf, dres, 1, MPI_DOUBLE_PRECISION, MPI_MAX, MPI_COMM_WORLD, ierr); MPI_OK
  CHECK(dres(1) == dble(rank + 1))

  ! A user op made from Fortran (as MUMPS makes one): called with the datatype as a Fortran
  ! handle, which imax_op checks.
  call MPI_Op_create(imax_op, .true., uop, ierr); MPI_OK
  ibuf(1:3) = [rank, 10 * rank, -rank]
  call MPI_Allreduce(ibuf, ires, 3, MPI_INTEGER, uop, MPI_COMM_WORLD, ierr); MPI_OK
  CHECK(ires(1) == n - 1 .and. ires(2) == 10 * (n - 1) .and. ires(3) == 0)
  call MPI_Op_free(uop, ierr); MPI_OK

  deallocate (gath, counts, displs, sendv, recvv, a2a_s, a2a_r)
  call finish('f_coll')
contains
#include "check_procs.h"
end program f_coll

! The user reduction of MPI_OP_CREATE above: the maximum of INTEGERs; a datatype argument that
! is not MPI_INTEGER as a Fortran handle poisons the result.
subroutine imax_op(invec, inoutvec, len, dtype)
  use mpi
  implicit none
  integer :: len, dtype, i
  integer :: invec(len), inoutvec(len)
  if (dtype /= MPI_INTEGER) then
    inoutvec(1:len) = -999999
    return
  end if
  do i = 1, len
    inoutvec(i) = max(invec(i), inoutvec(i))
  end do
end subroutine imax_op
