! f_types: derived datatypes from Fortran (`use mpi`): type_contiguous, type_vector,
! type_indexed, type_create_struct over a sequence derived type with MPI_Get_address,
! type_create_resized, type_size/get_extent, commit/free, and sending each of them
! (matched against other type signatures on the receiving side), with get_count and
! get_elements; datatype and window attributes with keyvals made from Fortran, predefined
! window attributes, a Fortran window error handler, and MPI_TYPE_MATCH_SIZE.
#include "check.h"
module f_types_rec
  implicit none
  type :: particle
    sequence
    integer :: id
    double precision :: pos(3)
    real :: mass
  end type particle
  integer :: win_errors = 0, win_error_code = 0, win_error_win = 0
contains
  ! A Fortran window error handler: records what it was called with.
  subroutine record_win_error(win, code)
    integer :: win, code
    win_errors = win_errors + 1
    win_error_code = code
    win_error_win = win
  end subroutine record_win_error
end module f_types_rec

program f_types
  use mpi
  use f_types_rec
  implicit none
  integer :: ierr, rank, nprocs, left, right, i, j, cnt, sz
  integer :: tcontig, tvec, tidx, tstruct, tpart, tres
  integer :: status(MPI_STATUS_SIZE)
  integer :: a(40), b(40)
  double precision :: m(6, 5), mr(6, 5)
  integer :: blens(3), idispl(3), types(3)
  integer(kind=MPI_ADDRESS_KIND) :: adispl(3), base, lb, extent
  integer :: kv, tdup, win, matched, weh, ecode
  integer(kind=MPI_ADDRESS_KIND) :: aval, extra, wsize
  logical :: flag
  integer :: wbuf(4)
  type(particle) :: ps(4), pr(4)

  call MPI_Init(ierr); MPI_OK
  call MPI_Comm_rank(MPI_COMM_WORLD, rank, ierr); MPI_OK
  call MPI_Comm_size(MPI_COMM_WORLD, nprocs, ierr); MPI_OK
  right = mod(rank + 1, nprocs)
  left = mod(rank + nprocs - 1, nprocs)

  ! contiguous: 5 integers; two of them go as 10 MPI_INTEGERs.
  call MPI_Type_contiguous(5, MPI_INTEGER, tcontig, ierr); MPI_OK
  call MPI_Type_commit(tcontig, ierr); MPI_OK
  call MPI_Type_size(tcontig, sz, ierr); MPI_OK
  CHECK(sz == 20)
  do i = 1, 40
    a(i) = 1000 * rank + i
  end do
  b = -1
  call MPI_Sendrecv(a, 2, tcontig, right, 1, b, 10, MPI_INTEGER, left, 1, MPI_COMM_WORLD, status, ierr); MPI_OK
  call MPI_Get_count(status, MPI_INTEGER, cnt, ierr); MPI_OK
  CHECK(cnt == 10)
  do i = 1, 10
    CHECK(b(i) == 1000 * left + i)
  end do
  CHECK(b(11) == -1)
  call MPI_Type_free(tcontig, ierr); MPI_OK
  CHECK(tcontig == MPI_DATATYPE_NULL)

  ! vector: row 2 of a 6x5 column-major matrix (stride 6), received as a column.
  do j = 1, 5
    do i = 1, 6
      m(i, j) = rank * 100 + i * 10 + j
    end do
  end do
  mr = -1d0
  call MPI_Type_vector(5, 1, 6, MPI_DOUBLE_PRECISION, tvec, ierr); MPI_OK
  call MPI_Type_commit(tvec, ierr); MPI_OK
  call MPI_Type_get_extent(tvec, lb, extent, ierr); MPI_OK
  CHECK(lb == 0 .and. extent == 8 * (4 * 6 + 1))
  call MPI_Sendrecv(m(2, 1), 1, tvec, right, 2, mr(1, 3), 5, MPI_DOUBLE_PRECISION, left, 2, &
                    MPI_COMM_WORLD, status, ierr); MPI_OK
  do j = 1, 5
    CHECK(mr(j, 3) == left * 100 + 20 + j)
  end do
  CHECK(mr(6, 3) == -1d0 .and. mr(1, 2) == -1d0)
  ! and the other way: a column received into a row
  mr = -1d0
  call MPI_Sendrecv(m(1, 4), 5, MPI_DOUBLE_PRECISION, right, 3, mr(3, 1), 1, tvec, left, 3, &
                    MPI_COMM_WORLD, status, ierr); MPI_OK
  do j = 1, 5
    CHECK(mr(3, j) == left * 100 + j * 10 + 4)
  end do
  call MPI_Get_elements(status, MPI_DOUBLE_PRECISION, cnt, ierr); MPI_OK
  CHECK(cnt == 5)
  call MPI_Type_free(tvec, ierr); MPI_OK

  ! indexed: blocks (2 at 0), (3 at 10), (1 at 30) of integers.
  blens = [2, 3, 1]
  idispl = [0, 10, 30]
  call MPI_Type_indexed(3, blens, idispl, MPI_INTEGER, tidx, ierr); MPI_OK
  call MPI_Type_commit(tidx, ierr); MPI_OK
  call MPI_Type_size(tidx, sz, ierr); MPI_OK
  CHECK(sz == 24)
  b = -1
  call MPI_Sendrecv(a, 1, tidx, right, 4, b, 1, tidx, left, 4, MPI_COMM_WORLD, status, ierr); MPI_OK
  do i = 1, 40
    if ((i >= 1 .and. i <= 2) .or. (i >= 11 .and. i <= 13) .or. i == 31) then
      CHECK(b(i) == 1000 * left + i)
    else
      CHECK(b(i) == -1)
    end if
  end do
  call MPI_Get_count(status, tidx, cnt, ierr); MPI_OK
  CHECK(cnt == 1)
  call MPI_Get_elements(status, tidx, cnt, ierr); MPI_OK
  CHECK(cnt == 6)
  call MPI_Type_free(tidx, ierr); MPI_OK

  ! struct over a derived type, displacements from MPI_Get_address, resized to the
  ! Fortran element size so that an array of them can be sent.
  call MPI_Get_address(ps(1), base, ierr); MPI_OK
  call MPI_Get_address(ps(1)%id, adispl(1), ierr); MPI_OK
  call MPI_Get_address(ps(1)%pos, adispl(2), ierr); MPI_OK
  call MPI_Get_address(ps(1)%mass, adispl(3), ierr); MPI_OK
  adispl = adispl - base
  CHECK(adispl(1) == 0 .and. adispl(2) >= 4 .and. adispl(3) >= adispl(2) + 24)
  blens = [1, 3, 1]
  types = [MPI_INTEGER, MPI_DOUBLE_PRECISION, MPI_REAL]
  call MPI_Type_create_struct(3, blens, adispl, types, tstruct, ierr); MPI_OK
  call MPI_Get_address(ps(2), extent, ierr); MPI_OK
  extent = extent - base
  base = extent
  call MPI_Type_create_resized(tstruct, 0_MPI_ADDRESS_KIND, extent, tpart, ierr); MPI_OK
  call MPI_Type_commit(tpart, ierr); MPI_OK
  call MPI_Type_size(tpart, sz, ierr); MPI_OK
  CHECK(sz == 4 + 24 + 4)
  call MPI_Type_get_extent(tpart, lb, extent, ierr); MPI_OK
  CHECK(lb == 0 .and. extent == base)
  do i = 1, 4
    ps(i)%id = rank * 10 + i
    ps(i)%pos = [dble(i), dble(rank), -dble(i)]
    ps(i)%mass = real(i) * 0.5
    pr(i)%id = -1
    pr(i)%pos = 0d0
    pr(i)%mass = 0.0
  end do
  call MPI_Sendrecv(ps, 4, tpart, right, 5, pr, 4, tpart, left, 5, MPI_COMM_WORLD, status, ierr); MPI_OK
  call MPI_Get_count(status, tpart, cnt, ierr); MPI_OK
  CHECK(cnt == 4)
  do i = 1, 4
    CHECK(pr(i)%id == left * 10 + i)
    CHECK(all(pr(i)%pos == [dble(i), dble(left), -dble(i)]))
    CHECK(pr(i)%mass == real(i) * 0.5)
  end do
  ! bcast of the struct array, then a reduce of one field through a vector-like type
  do i = 1, 4
    pr(i) = ps(i)
  end do
  call MPI_Bcast(pr, 4, tpart, 0, MPI_COMM_WORLD, ierr); MPI_OK
  do i = 1, 4
    CHECK(pr(i)%id == i .and. pr(i)%pos(2) == 0d0)
  end do
  ! a resized integer type picking every 4th element of a
  call MPI_Type_create_resized(MPI_INTEGER, 0_MPI_ADDRESS_KIND, 16_MPI_ADDRESS_KIND, tres, ierr); MPI_OK
  call MPI_Type_commit(tres, ierr); MPI_OK
  b = -1
  call MPI_Sendrecv(a, 10, tres, right, 6, b, 10, MPI_INTEGER, left, 6, MPI_COMM_WORLD, status, ierr); MPI_OK
  do i = 1, 10
    CHECK(b(i) == 1000 * left + 4 * (i - 1) + 1)
  end do
  call MPI_Type_free(tres, ierr); MPI_OK
  call MPI_Type_free(tpart, ierr); MPI_OK
  call MPI_Type_free(tstruct, ierr); MPI_OK

  ! Attributes on a datatype with a keyval made from Fortran (Open MPI's own Fortran wrappers
  ! call libmpi internals for these).
  extra = 0
  call MPI_Type_dup(MPI_INTEGER, tdup, ierr); MPI_OK
  call MPI_Type_create_keyval(MPI_TYPE_NULL_COPY_FN, MPI_TYPE_NULL_DELETE_FN, kv, extra, ierr); MPI_OK
  aval = 1234 + rank
  call MPI_Type_set_attr(tdup, kv, aval, ierr); MPI_OK
  aval = 0
  call MPI_Type_get_attr(tdup, kv, aval, flag, ierr); MPI_OK
  CHECK(flag .and. aval == 1234 + rank)
  call MPI_Type_free(tdup, ierr); MPI_OK
  call MPI_Type_free_keyval(kv, ierr); MPI_OK

  ! The same on a window, and its predefined attributes as Fortran sees them: their values.
  wsize = 4 * 4
  call MPI_Win_create(wbuf, wsize, 4, MPI_INFO_NULL, MPI_COMM_WORLD, win, ierr); MPI_OK
  call MPI_Win_create_keyval(MPI_WIN_NULL_COPY_FN, MPI_WIN_NULL_DELETE_FN, kv, extra, ierr); MPI_OK
  aval = 77 + rank
  call MPI_Win_set_attr(win, kv, aval, ierr); MPI_OK
  aval = 0
  call MPI_Win_get_attr(win, kv, aval, flag, ierr); MPI_OK
  CHECK(flag .and. aval == 77 + rank)
  call MPI_Win_get_attr(win, MPI_WIN_SIZE, aval, flag, ierr); MPI_OK
  CHECK(flag .and. aval == 16)
  call MPI_Win_get_attr(win, MPI_WIN_DISP_UNIT, aval, flag, ierr); MPI_OK
  CHECK(flag .and. aval == 4)
  ! A Fortran window error handler sees the window's Fortran handle and the code, both when
  ! an operation fails (a target rank outside the window's group) and when called.
  call MPI_Win_create_errhandler(record_win_error, weh, ierr); MPI_OK
  call MPI_Win_set_errhandler(win, weh, ierr); MPI_OK
  call MPI_Win_fence(0, win, ierr); MPI_OK
  wsize = 0
  call MPI_Put(a, 1, MPI_INTEGER, nprocs, wsize, 1, MPI_INTEGER, win, ecode)
  CHECK(win_errors == 1 .and. win_error_win == win)
  CHECK(ecode /= MPI_SUCCESS .and. ecode == win_error_code)
  call MPI_Win_fence(0, win, ierr); MPI_OK
  call MPI_Win_call_errhandler(win, MPI_ERR_OTHER, ierr); MPI_OK
  CHECK(win_errors == 2 .and. win_error_win == win .and. win_error_code == MPI_ERR_OTHER)
  call MPI_Errhandler_free(weh, ierr); MPI_OK
  call MPI_Win_free(win, ierr); MPI_OK
  call MPI_Win_free_keyval(kv, ierr); MPI_OK

  ! MPI_TYPE_MATCH_SIZE answers Fortran types, as Open MPI does.
  call MPI_Type_match_size(MPI_TYPECLASS_REAL, 8, matched, ierr); MPI_OK
  CHECK(matched == MPI_REAL8)
  call MPI_Type_match_size(MPI_TYPECLASS_INTEGER, 4, matched, ierr); MPI_OK
  CHECK(matched == MPI_INTEGER)
  call MPI_Type_size(matched, sz, ierr); MPI_OK
  CHECK(sz == 4)

  call finish('f_types')
contains
#include "check_procs.h"
end program f_types
