! Shared checks of kawarimi's self-checking Fortran MPI test programs (cpp, -cpp).
!
! CHECK(cond) fails with the text of the condition; MPI_OK fails unless the variable
! `ierr` holds MPI_SUCCESS (write `call MPI_X(..., ierr); MPI_OK`). On failure a program
! prints `FAIL <file>:<line> rank <r>: <what>` to stderr and calls MPI_Abort on
! MPI_COMM_WORLD. At the end `call finish('name')` runs a barrier, rank 0 prints
! `OK <name>`, and MPI is finalized. Conditions must not contain double quotes.
! The procedures are in check_procs.h, included after the program's `contains`, so they
! use whichever binding the program uses (mpif.h, `use mpi` or `use mpi_f08`).
#define CHECK(cond) if (.not. (cond)) call check_fail(__FILE__, __LINE__, "cond")
#define MPI_OK if (ierr /= MPI_SUCCESS) call check_fail_code(__FILE__, __LINE__, ierr)
