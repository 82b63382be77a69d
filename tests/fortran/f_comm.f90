! f_comm: communicators from Fortran (`use mpi`): comm_dup and comm_compare, comm_split
! with reordering keys and MPI_UNDEFINED, comm_free, groups (comm_group, incl, excl,
! translate_ranks, union, compare, comm_create), Cartesian topologies (dims_create,
! cart_create, cart_coords/rank, cart_shift, cart_sub), communicator names, attributes
! (MPI_TAG_UB, comm_create_keyval/set_attr/get_attr/delete_attr/free_keyval, copying
! on dup with MPI_COMM_DUP_FN and with Fortran user copy/delete callbacks, and the MPI-1
! keyval_create/attr_put/attr_get/attr_delete/keyval_free), a Fortran error handler
! (comm_create_errhandler) and MPI_ERRORS_RETURN.
#include "check.h"
module f_comm_callbacks
  implicit none
  integer :: deleted = 0
  integer :: handled_calls = 0, handled_code = 0, handled_comm = 0
contains
  ! A Fortran error handler: records what it was called with.
  subroutine record_error(comm, code)
    integer :: comm, code
    handled_calls = handled_calls + 1
    handled_code = code
    handled_comm = comm
  end subroutine record_error

  ! A user copy callback: the copy holds the value plus extra_state.
  subroutine copy_plus(oldcomm, keyval, extra_state, val_in, val_out, flag, ierr)
    use mpi, only: MPI_ADDRESS_KIND, MPI_SUCCESS
    integer :: oldcomm, keyval, ierr
    integer(kind=MPI_ADDRESS_KIND) :: extra_state, val_in, val_out
    logical :: flag
    if (oldcomm == keyval) continue
    val_out = val_in + extra_state
    flag = .true.
    ierr = MPI_SUCCESS
  end subroutine copy_plus

  ! A user delete callback: counts the deletions.
  subroutine count_delete(comm, keyval, val, extra_state, ierr)
    use mpi, only: MPI_ADDRESS_KIND, MPI_SUCCESS
    integer :: comm, keyval, ierr
    integer(kind=MPI_ADDRESS_KIND) :: val, extra_state
    if (comm == keyval .or. val == extra_state) continue
    deleted = deleted + 1
    ierr = MPI_SUCCESS
  end subroutine count_delete

  ! MPI-1 callbacks (MPI_KEYVAL_CREATE): default integers throughout.
  subroutine copy_int(oldcomm, keyval, extra_state, val_in, val_out, flag, ierr)
    use mpi, only: MPI_SUCCESS
    integer :: oldcomm, keyval, extra_state, val_in, val_out, ierr
    logical :: flag
    if (oldcomm == keyval) continue
    val_out = val_in + extra_state
    flag = .true.
    ierr = MPI_SUCCESS
  end subroutine copy_int

  subroutine delete_int(comm, keyval, val, extra_state, ierr)
    use mpi, only: MPI_SUCCESS
    integer :: comm, keyval, val, extra_state, ierr
    if (comm == keyval .or. val == extra_state) continue
    deleted = deleted + 1
    ierr = MPI_SUCCESS
  end subroutine delete_int
end module f_comm_callbacks

program f_comm
  use mpi
  use f_comm_callbacks
  implicit none
  integer :: ierr, rank, nprocs, i, res, r2, n2, color, key, cnt
  integer :: dup, split, half, cart, row, created, keyval
  integer :: wgroup, g1, g2, gu, gcreated
  integer :: dims(2), coords(2), src, dst, crank
  logical :: periods(2), remain(2), flag
  integer, allocatable :: ranks(:), tr(:), vals(:)
  integer(kind=MPI_ADDRESS_KIND) :: aval, extra
  character(len=MPI_MAX_OBJECT_NAME) :: cname
  integer :: nlen, buf(1), ecls, ecode, ival, eh

  call MPI_Init(ierr); MPI_OK
  call MPI_Comm_rank(MPI_COMM_WORLD, rank, ierr); MPI_OK
  call MPI_Comm_size(MPI_COMM_WORLD, nprocs, ierr); MPI_OK

  ! dup: congruent, independent traffic.
  call MPI_Comm_dup(MPI_COMM_WORLD, dup, ierr); MPI_OK
  call MPI_Comm_compare(MPI_COMM_WORLD, dup, res, ierr); MPI_OK
  CHECK(res == MPI_CONGRUENT)
  call MPI_Comm_compare(dup, dup, res, ierr); MPI_OK
  CHECK(res == MPI_IDENT)
  call MPI_Comm_rank(dup, r2, ierr); MPI_OK
  CHECK(r2 == rank)
  buf(1) = rank
  call MPI_Allreduce(MPI_IN_PLACE, buf, 1, MPI_INTEGER, MPI_SUM, dup, ierr); MPI_OK
  CHECK(buf(1) == nprocs * (nprocs - 1) / 2)

  ! split: reverse order inside each parity class.
  color = mod(rank, 2)
  key = nprocs - rank
  call MPI_Comm_split(MPI_COMM_WORLD, color, key, split, ierr); MPI_OK
  call MPI_Comm_size(split, n2, ierr); MPI_OK
  call MPI_Comm_rank(split, r2, ierr); MPI_OK
  cnt = (nprocs - color + 1) / 2
  CHECK(n2 == cnt)
  allocate (vals(n2))
  call MPI_Allgather([rank], 1, MPI_INTEGER, vals, 1, MPI_INTEGER, split, ierr); MPI_OK
  do i = 2, n2
    CHECK(vals(i) < vals(i - 1))
  end do
  do i = 1, n2
    CHECK(mod(vals(i), 2) == color)
  end do
  CHECK(vals(r2 + 1) == rank)
  deallocate (vals)
  call MPI_Comm_compare(MPI_COMM_WORLD, split, res, ierr); MPI_OK
  CHECK(res == MPI_UNEQUAL)
  call MPI_Comm_free(split, ierr); MPI_OK
  CHECK(split == MPI_COMM_NULL)

  ! split with MPI_UNDEFINED: rank 0 gets MPI_COMM_NULL.
  color = 1
  if (rank == 0) color = MPI_UNDEFINED
  call MPI_Comm_split(MPI_COMM_WORLD, color, rank, half, ierr); MPI_OK
  if (rank == 0) then
    CHECK(half == MPI_COMM_NULL)
  else
    call MPI_Comm_size(half, n2, ierr); MPI_OK
    CHECK(n2 == nprocs - 1)
    call MPI_Comm_rank(half, r2, ierr); MPI_OK
    CHECK(r2 == rank - 1)
    call MPI_Comm_free(half, ierr); MPI_OK
  end if

  ! groups.
  call MPI_Comm_group(MPI_COMM_WORLD, wgroup, ierr); MPI_OK
  call MPI_Group_size(wgroup, n2, ierr); MPI_OK
  CHECK(n2 == nprocs)
  allocate (ranks(nprocs), tr(nprocs))
  do i = 1, nprocs
    ranks(i) = nprocs - i
  end do
  call MPI_Group_incl(wgroup, nprocs, ranks, g1, ierr); MPI_OK
  call MPI_Group_rank(g1, r2, ierr); MPI_OK
  CHECK(r2 == nprocs - 1 - rank)
  call MPI_Group_compare(wgroup, g1, res, ierr); MPI_OK
  CHECK(res == MPI_SIMILAR)
  do i = 1, nprocs
    ranks(i) = i - 1
  end do
  call MPI_Group_translate_ranks(g1, nprocs, ranks, wgroup, tr, ierr); MPI_OK
  do i = 1, nprocs
    CHECK(tr(i) == nprocs - i)
  end do
  ranks(1) = 0
  call MPI_Group_excl(wgroup, 1, ranks, g2, ierr); MPI_OK
  call MPI_Group_size(g2, n2, ierr); MPI_OK
  CHECK(n2 == nprocs - 1)
  call MPI_Group_rank(g2, r2, ierr); MPI_OK
  if (rank == 0) then
    CHECK(r2 == MPI_UNDEFINED)
  else
    CHECK(r2 == rank - 1)
  end if
  call MPI_Group_union(g2, g1, gu, ierr); MPI_OK
  call MPI_Group_size(gu, n2, ierr); MPI_OK
  CHECK(n2 == nprocs)
  ! comm_create over the group without rank 0
  call MPI_Comm_create(MPI_COMM_WORLD, g2, created, ierr); MPI_OK
  if (rank == 0) then
    CHECK(created == MPI_COMM_NULL)
  else
    call MPI_Comm_group(created, gcreated, ierr); MPI_OK
    call MPI_Group_compare(gcreated, g2, res, ierr); MPI_OK
    CHECK(res == MPI_IDENT)
    call MPI_Group_free(gcreated, ierr); MPI_OK
    buf(1) = 1
    call MPI_Allreduce(MPI_IN_PLACE, buf, 1, MPI_INTEGER, MPI_SUM, created, ierr); MPI_OK
    CHECK(buf(1) == nprocs - 1)
    call MPI_Comm_free(created, ierr); MPI_OK
  end if
  call MPI_Group_free(gu, ierr); MPI_OK
  call MPI_Group_free(g2, ierr); MPI_OK
  call MPI_Group_free(g1, ierr); MPI_OK
  call MPI_Group_free(wgroup, ierr); MPI_OK
  CHECK(wgroup == MPI_GROUP_NULL)
  deallocate (ranks, tr)

  ! Cartesian topology: 2-D, periodic in dimension 1 only.
  dims = 0
  call MPI_Dims_create(nprocs, 2, dims, ierr); MPI_OK
  CHECK(dims(1) * dims(2) == nprocs .and. dims(1) >= dims(2))
  periods = [.true., .false.]
  call MPI_Cart_create(MPI_COMM_WORLD, 2, dims, periods, .false., cart, ierr); MPI_OK
  call MPI_Topo_test(cart, res, ierr); MPI_OK
  CHECK(res == MPI_CART)
  call MPI_Comm_rank(cart, crank, ierr); MPI_OK
  call MPI_Cart_coords(cart, crank, 2, coords, ierr); MPI_OK
  CHECK(coords(1) == crank / dims(2) .and. coords(2) == mod(crank, dims(2)))
  call MPI_Cart_rank(cart, coords, r2, ierr); MPI_OK
  CHECK(r2 == crank)
  call MPI_Cart_shift(cart, 0, 1, src, dst, ierr); MPI_OK
  CHECK(src == mod(coords(1) - 1 + dims(1), dims(1)) * dims(2) + coords(2))
  CHECK(dst == mod(coords(1) + 1, dims(1)) * dims(2) + coords(2))
  call MPI_Cart_shift(cart, 1, 1, src, dst, ierr); MPI_OK
  if (coords(2) == 0) then
    CHECK(src == MPI_PROC_NULL)
  else
    CHECK(src == crank - 1)
  end if
  if (coords(2) == dims(2) - 1) then
    CHECK(dst == MPI_PROC_NULL)
  else
    CHECK(dst == crank + 1)
  end if
  ! rows: keep dimension 2
  remain = [.false., .true.]
  call MPI_Cart_sub(cart, remain, row, ierr); MPI_OK
  call MPI_Comm_size(row, n2, ierr); MPI_OK
  CHECK(n2 == dims(2))
  call MPI_Comm_rank(row, r2, ierr); MPI_OK
  CHECK(r2 == coords(2))
  buf(1) = crank
  call MPI_Allreduce(MPI_IN_PLACE, buf, 1, MPI_INTEGER, MPI_MIN, row, ierr); MPI_OK
  CHECK(buf(1) == coords(1) * dims(2))
  call MPI_Comm_free(row, ierr); MPI_OK
  call MPI_Comm_free(cart, ierr); MPI_OK

  ! names.
  call MPI_Comm_set_name(dup, 'fortran dup', ierr); MPI_OK
  cname = 'x'
  call MPI_Comm_get_name(dup, cname, nlen, ierr); MPI_OK
  CHECK(nlen == 11 .and. cname == 'fortran dup')
  call MPI_Comm_get_name(MPI_COMM_WORLD, cname, nlen, ierr); MPI_OK
  CHECK(cname(1:nlen) == 'MPI_COMM_WORLD')

  ! attributes: the predefined MPI_TAG_UB, then one of ours, copied by MPI_COMM_DUP_FN.
  call MPI_Comm_get_attr(MPI_COMM_WORLD, MPI_TAG_UB, aval, flag, ierr); MPI_OK
  CHECK(flag .and. aval >= 32767)
  extra = 0
  call MPI_Comm_create_keyval(MPI_COMM_DUP_FN, MPI_COMM_NULL_DELETE_FN, keyval, extra, ierr); MPI_OK
  call MPI_Comm_get_attr(dup, keyval, aval, flag, ierr); MPI_OK
  CHECK(.not. flag)
  aval = 1234567890123_MPI_ADDRESS_KIND + rank
  call MPI_Comm_set_attr(dup, keyval, aval, ierr); MPI_OK
  aval = 0
  call MPI_Comm_get_attr(dup, keyval, aval, flag, ierr); MPI_OK
  CHECK(flag .and. aval == 1234567890123_MPI_ADDRESS_KIND + rank)
  call MPI_Comm_dup(dup, split, ierr); MPI_OK
  aval = 0
  call MPI_Comm_get_attr(split, keyval, aval, flag, ierr); MPI_OK
  CHECK(flag .and. aval == 1234567890123_MPI_ADDRESS_KIND + rank)
  call MPI_Comm_free(split, ierr); MPI_OK
  call MPI_Comm_delete_attr(dup, keyval, ierr); MPI_OK
  call MPI_Comm_get_attr(dup, keyval, aval, flag, ierr); MPI_OK
  CHECK(.not. flag)
  call MPI_Comm_free_keyval(keyval, ierr); MPI_OK
  CHECK(keyval == MPI_KEYVAL_INVALID)

  ! Fortran user callbacks: copied on dup (value + extra_state), deleted on free.
  extra = 5
  call MPI_Comm_create_keyval(copy_plus, count_delete, keyval, extra, ierr); MPI_OK
  aval = 100 + rank
  call MPI_Comm_set_attr(dup, keyval, aval, ierr); MPI_OK
  call MPI_Comm_dup(dup, split, ierr); MPI_OK
  call MPI_Comm_get_attr(split, keyval, aval, flag, ierr); MPI_OK
  CHECK(flag .and. aval == 105 + rank)
  CHECK(deleted == 0)
  call MPI_Comm_free(split, ierr); MPI_OK
  CHECK(deleted == 1)
  aval = 7
  call MPI_Comm_set_attr(dup, keyval, aval, ierr); MPI_OK
  CHECK(deleted == 2)
  call MPI_Comm_delete_attr(dup, keyval, ierr); MPI_OK
  CHECK(deleted == 3)
  call MPI_Comm_free_keyval(keyval, ierr); MPI_OK

  ! The MPI-1 interface: MPI_KEYVAL_CREATE with integer callbacks, MPI_ATTR_PUT/GET/DELETE.
  deleted = 0
  call MPI_Keyval_create(copy_int, delete_int, keyval, 3, ierr); MPI_OK
  call MPI_Attr_put(dup, keyval, 40 + rank, ierr); MPI_OK
  call MPI_Comm_dup(dup, split, ierr); MPI_OK
  call MPI_Attr_get(split, keyval, ival, flag, ierr); MPI_OK
  CHECK(flag .and. ival == 43 + rank)
  call MPI_Comm_free(split, ierr); MPI_OK
  CHECK(deleted == 1)
  call MPI_Attr_delete(dup, keyval, ierr); MPI_OK
  CHECK(deleted == 2)
  call MPI_Attr_get(dup, keyval, ival, flag, ierr); MPI_OK
  CHECK(.not. flag)
  call MPI_Keyval_free(keyval, ierr); MPI_OK
  CHECK(keyval == MPI_KEYVAL_INVALID)

  ! A Fortran error handler sees the communicator's Fortran handle and the code, and the
  ! call still returns the code.
  call MPI_Comm_create_errhandler(record_error, eh, ierr); MPI_OK
  call MPI_Comm_set_errhandler(dup, eh, ierr); MPI_OK
  call MPI_Send(buf, 1, MPI_INTEGER, nprocs, 0, dup, ecode)
  CHECK(handled_calls == 1 .and. handled_comm == dup)
  CHECK(ecode /= MPI_SUCCESS .and. ecode == handled_code)
  call MPI_Errhandler_free(eh, ierr); MPI_OK

  ! MPI_ERRORS_RETURN: an invalid rank comes back as an error code of class MPI_ERR_RANK.
  call MPI_Comm_set_errhandler(dup, MPI_ERRORS_RETURN, ierr); MPI_OK
  call MPI_Send(buf, 1, MPI_INTEGER, nprocs, 0, dup, ecode)
  CHECK(ecode /= MPI_SUCCESS)
  call MPI_Error_class(ecode, ecls, ierr); MPI_OK
  CHECK(ecls == MPI_ERR_RANK)

  call MPI_Comm_free(dup, ierr); MPI_OK
  CHECK(dup == MPI_COMM_NULL)
  call finish('f_comm')
contains
#include "check_procs.h"
end program f_comm
