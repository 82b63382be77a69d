! f_persist: persistent collectives from Fortran (`use mpi` with Open MPI's `mpif-ext.h`,
! which declares the MPIX_*_init extension): an allreduce, a bcast and an alltoall made once
! and started each round with new data, two at once through MPI_Startall.
#include "check.h"
program f_persist
  use mpi
  implicit none
  include 'mpif-ext.h'
  integer :: ierr, rank, nprocs, k, r, total
  integer :: reqs(3), mine, word(4)
  integer, allocatable :: a2a_s(:), a2a_r(:)

  call MPI_Init(ierr); MPI_OK
  call MPI_Comm_rank(MPI_COMM_WORLD, rank, ierr); MPI_OK
  call MPI_Comm_size(MPI_COMM_WORLD, nprocs, ierr); MPI_OK
  allocate (a2a_s(nprocs), a2a_r(nprocs))

  call MPIX_Allreduce_init(mine, total, 1, MPI_INTEGER, MPI_SUM, MPI_COMM_WORLD, MPI_INFO_NULL, reqs(1), ierr); MPI_OK
  call MPIX_Bcast_init(word, 4, MPI_INTEGER, nprocs - 1, MPI_COMM_WORLD, MPI_INFO_NULL, reqs(2), ierr); MPI_OK
  call MPIX_Alltoall_init(a2a_s, 1, MPI_INTEGER, a2a_r, 1, MPI_INTEGER, MPI_COMM_WORLD, MPI_INFO_NULL, reqs(3), ierr); MPI_OK
  do k = 1, 4
    mine = 100 * rank + k
    word = -1
    if (rank == nprocs - 1) word = [k, 2 * k, 3 * k, 4 * k]
    do r = 1, nprocs
      a2a_s(r) = 1000 * rank + 10 * (r - 1) + k
    end do
    call MPI_Start(reqs(1), ierr); MPI_OK
    call MPI_Wait(reqs(1), MPI_STATUS_IGNORE, ierr); MPI_OK
    CHECK(total == 100 * (nprocs * (nprocs - 1) / 2) + nprocs * k)
    call MPI_Startall(2, reqs(2:3), ierr); MPI_OK
    call MPI_Waitall(2, reqs(2:3), MPI_STATUSES_IGNORE, ierr); MPI_OK
    CHECK(all(word == [k, 2 * k, 3 * k, 4 * k]))
    do r = 1, nprocs
      CHECK(a2a_r(r) == 1000 * (r - 1) + 10 * rank + k)
    end do
  end do
  do r = 1, 3
    call MPI_Request_free(reqs(r), ierr); MPI_OK
    CHECK(reqs(r) == MPI_REQUEST_NULL)
  end do
  call finish('f_persist')

contains

#include "check_procs.h"

end program f_persist
