! Contained procedures of check.h: include after the program's `contains`.
  subroutine check_fail(file, line, what)
    character(len=*), intent(in) :: file, what
    integer, intent(in) :: line
    integer :: r, e
    logical :: init, fin
    r = -1
    init = .false.
    fin = .false.
    call MPI_Initialized(init, e)
    call MPI_Finalized(fin, e)
    if (init .and. .not. fin) call MPI_Comm_rank(MPI_COMM_WORLD, r, e)
    write (0, '(a,a,a,i0,a,i0,a,a)') 'FAIL ', file, ':', line, ' rank ', r, ': ', what
    flush (0)
    flush (6)
    if (init .and. .not. fin) call MPI_Abort(MPI_COMM_WORLD, 1, e)
    error stop 1
  end subroutine check_fail

  subroutine check_fail_code(file, line, code)
    character(len=*), intent(in) :: file
    integer, intent(in) :: line, code
    character(len=40) :: msg
    write (msg, '(a,i0)') 'MPI call returned error code ', code
    call check_fail(file, line, trim(msg))
  end subroutine check_fail_code

  subroutine finish(name)
    character(len=*), intent(in) :: name
    integer :: r, e
    call MPI_Barrier(MPI_COMM_WORLD, e)
    if (e /= MPI_SUCCESS) call check_fail_code(__FILE__, __LINE__, e)
    call MPI_Comm_rank(MPI_COMM_WORLD, r, e)
    if (r == 0) then
      write (6, '(a,a)') 'OK ', name
      flush (6)
    end if
    call MPI_Finalize(e)
  end subroutine finish
