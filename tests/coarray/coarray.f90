! Coarray Fortran through OpenCoarrays (Debian's libcoarrays-openmpi-dev, which runs coarrays on
! MPI one-sided windows and collectives; nobody here wrote it): remote puts and gets of whole
! and strided coarray sections, sync all / sync images, the collective subroutines co_sum,
! co_max, co_min and co_broadcast, events (event post / event wait / event_query), atomics,
! a critical section and a lock. Every value is checked; image 1 prints "OK coarray" when all
! hold. The first command-line argument is the number of rounds (default 3), so a migration can
! land in the middle.
program coarray
  use, intrinsic :: iso_fortran_env, only: event_type, lock_type, atomic_int_kind, int64
  implicit none
  integer, parameter :: n = 4096
  real(8) :: field(n)[*]
  integer :: grid(8, 8)[*]
  integer(atomic_int_kind) :: hits[*]
  integer :: guarded[*]
  type(event_type) :: ready[*]
  type(lock_type) :: mutex[*]
  integer :: me, np, right, left, round, rounds, i, j, total, count, ios
  integer(int64) :: isum
  real(8) :: local(n), dmax
  character(len=32) :: arg

  me = this_image()
  np = num_images()
  right = merge(1, me + 1, me == np)
  left = merge(np, me - 1, me == 1)
  rounds = 3
  if (command_argument_count() >= 1) then
    call get_command_argument(1, arg)
    read (arg, *, iostat=ios) rounds
    if (ios /= 0) call fail('bad round count ' // trim(arg))
  end if

  do round = 1, rounds
    ! 1. A whole-array put into the right neighbour, checked by its owner after sync all.
    do i = 1, n
      local(i) = value(me, round, i)
    end do
    field(:)[right] = local
    sync all
    do i = 1, n
      if (field(i) /= value(left, round, i)) call fail('put: field element wrong')
    end do

    ! 2. A strided get: every other element of the left neighbour's field.
    sync all
    local = 0
    local(1:n:2) = field(1:n:2)[left]
    do i = 1, n, 2
      if (local(i) /= value(modulo(left - 2, np) + 1, round, i)) call fail('strided get wrong')
    end do

    ! 3. A 2-D section put: rows 2..5, columns 3..6 of the right neighbour's grid.
    grid = -1
    sync all
    grid(2:5, 3:6)[right] = reshape([(me * 100 + round + i, i = 1, 16)], [4, 4])
    sync all
    do j = 1, 8
      do i = 1, 8
        if (i >= 2 .and. i <= 5 .and. j >= 3 .and. j <= 6) then
          if (grid(i, j) /= left * 100 + round + (i - 1) + 4 * (j - 3)) call fail('section put wrong')
        else if (grid(i, j) /= -1) then
          call fail('section put wrote outside the section')
        end if
      end do
    end do

    ! 4. Collectives.
    total = me * round
    call co_sum(total)
    if (total /= round * np * (np + 1) / 2) call fail('co_sum wrong')
    isum = int(me, int64) * 3000000000_int64
    call co_sum(isum, result_image=1)
    if (me == 1 .and. isum /= 3000000000_int64 * np * (np + 1) / 2) call fail('co_sum int64 wrong')
    dmax = real(me, 8) + 0.5d0
    call co_max(dmax)
    if (dmax /= np + 0.5d0) call fail('co_max wrong')
    count = me
    call co_min(count)
    if (count /= 1) call fail('co_min wrong')
    local(1:8) = 0
    if (me == np) local(1:8) = [(real(i * round, 8), i = 1, 8)]
    call co_broadcast(local(1:8), source_image=np)
    do i = 1, 8
      if (local(i) /= i * round) call fail('co_broadcast wrong')
    end do

    ! 5. Events: every image posts to its right neighbour and waits for its left one's post;
    ! then every image posts to image 1, which waits for all of them.
    event post (ready[right])
    event wait (ready)
    event post (ready[1])
    if (me == 1) then
      event wait (ready, until_count=np)
    end if
    sync all
    call event_query(ready, count)
    if (count /= 0) call fail('event count left over')

    ! 6. Atomics: every image adds 1 to image 1's counter 10 times.
    if (me == 1) call atomic_define(hits, 0)
    sync all
    do i = 1, 10
      call atomic_add(hits[1], 1)
    end do
    sync all
    if (me == 1) then
      call atomic_ref(count, hits)
      if (count /= 10 * np) call fail('atomic_add lost an increment')
    end if

    ! 7. A critical section and a lock each guard a read-increment-write on image np.
    if (me == np) guarded = 0
    sync all
    do i = 1, 5
      critical
        guarded[np] = guarded[np] + 1
      end critical
    end do
    sync all  ! the critical section and the lock do not exclude each other
    do i = 1, 5
      lock (mutex[np])
      guarded[np] = guarded[np] + 1
      unlock (mutex[np])
    end do
    sync all
    if (me == np .and. guarded /= 10 * np) call fail('critical/lock lost an increment')

    ! 8. sync images with both neighbours only.
    ! (An image list must not repeat an image: at two images both neighbours are one.)
    if (np == 2) then
      sync images (right)
    else if (np > 2) then
      sync images ([left, right])
    end if
    sync all
  end do

  if (me == 1) print '(a)', 'OK coarray'

contains

  pure real(8) function value(image, round, i)
    integer, intent(in) :: image, round, i
    value = image * 1.0d6 + round * 1.0d4 + i
  end function value

  subroutine fail(what)
    character(len=*), intent(in) :: what
    write (0, '(a, i0, a, i0, 2a)') 'coarray image ', this_image(), ' round ', round, ': ', what
    error stop 1
  end subroutine fail
end program coarray
