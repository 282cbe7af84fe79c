/* sys.h -- what the system-call files share: the handlers the dispatch table
 * names, path buffers and argument helpers. */
#ifndef LINUX_SYS_H
#define LINUX_SYS_H

#include "linux.h"

typedef int16_t s16;
typedef long (*sys_fn)(u64, u64, u64, u64, u64, u64);

#define PATH_MAX 4096
#define EXEC_MAX (128 * 1024)
#define SIGPIPE 13
#define SIGCHLD 17
#define EPOCH 1700000000ULL /* virtual wall clock: seconds at virtual time 0 */

extern char path_a[PATH_MAX], path_b[PATH_MAX];
/* Linux's access_ok: the range lies in the user half (checked before anything else). */
int user_range(u64 p, u64 len);
/* A path argument into dst: 0, -EFAULT, -ENAMETOOLONG or -ENOENT (empty). */
long get_path(char *dst, u64 upath);
long at_dir(s64 dirfd, const char *path, struct inode **dir);
void fill_random(u8 *out, u64 n);
const char *signal_name(int sig);
extern int last_wait_status;

long sys_access(u64, u64, u64, u64, u64, u64);
long sys_arch_prctl(u64, u64, u64, u64, u64, u64);
long sys_brk(u64, u64, u64, u64, u64, u64);
long sys_chdir(u64, u64, u64, u64, u64, u64);
long sys_chmod(u64, u64, u64, u64, u64, u64);
long sys_chown(u64, u64, u64, u64, u64, u64);
long sys_clock_getres(u64, u64, u64, u64, u64, u64);
long sys_clock_gettime(u64, u64, u64, u64, u64, u64);
long sys_clock_nanosleep(u64, u64, u64, u64, u64, u64);
long sys_clone(u64, u64, u64, u64, u64, u64);
long sys_close(u64, u64, u64, u64, u64, u64);
long sys_dup(u64, u64, u64, u64, u64, u64);
long sys_dup2(u64, u64, u64, u64, u64, u64);
long sys_dup3(u64, u64, u64, u64, u64, u64);
long sys_execve(u64, u64, u64, u64, u64, u64);
long sys_exit(u64, u64, u64, u64, u64, u64);
long sys_exit_group(u64, u64, u64, u64, u64, u64);
long sys_faccessat(u64, u64, u64, u64, u64, u64);
long sys_fchdir(u64, u64, u64, u64, u64, u64);
long sys_fchmod(u64, u64, u64, u64, u64, u64);
long sys_fchmodat(u64, u64, u64, u64, u64, u64);
long sys_fchown(u64, u64, u64, u64, u64, u64);
long sys_fchownat(u64, u64, u64, u64, u64, u64);
long sys_fcntl(u64, u64, u64, u64, u64, u64);
long sys_fork(u64, u64, u64, u64, u64, u64);
long sys_fstat(u64, u64, u64, u64, u64, u64);
long sys_fstatfs(u64, u64, u64, u64, u64, u64);
long sys_fsync(u64, u64, u64, u64, u64, u64);
long sys_ftruncate(u64, u64, u64, u64, u64, u64);
long sys_getcwd(u64, u64, u64, u64, u64, u64);
long sys_getdents64(u64, u64, u64, u64, u64, u64);
long sys_getitimer(u64, u64, u64, u64, u64, u64);
long sys_getpgid(u64, u64, u64, u64, u64, u64);
long sys_getpgrp(u64, u64, u64, u64, u64, u64);
long sys_getpid(u64, u64, u64, u64, u64, u64);
long sys_getppid(u64, u64, u64, u64, u64, u64);
long sys_getrandom(u64, u64, u64, u64, u64, u64);
long sys_getrlimit(u64, u64, u64, u64, u64, u64);
long sys_getrusage(u64, u64, u64, u64, u64, u64);
long sys_getsid(u64, u64, u64, u64, u64, u64);
long sys_gettid(u64, u64, u64, u64, u64, u64);
long sys_gettimeofday(u64, u64, u64, u64, u64, u64);
long sys_ioctl(u64, u64, u64, u64, u64, u64);
long sys_itimer(u64, u64, u64, u64, u64, u64);
long sys_kill(u64, u64, u64, u64, u64, u64);
long sys_link(u64, u64, u64, u64, u64, u64);
long sys_lseek(u64, u64, u64, u64, u64, u64);
long sys_lstat(u64, u64, u64, u64, u64, u64);
long sys_madvise(u64, u64, u64, u64, u64, u64);
long sys_mkdir(u64, u64, u64, u64, u64, u64);
long sys_mkdirat(u64, u64, u64, u64, u64, u64);
long sys_mmap(u64, u64, u64, u64, u64, u64);
long sys_mremap(u64, u64, u64, u64, u64, u64);
long sys_mprotect(u64, u64, u64, u64, u64, u64);
long sys_munmap(u64, u64, u64, u64, u64, u64);
long sys_nanosleep(u64, u64, u64, u64, u64, u64);
long sys_newfstatat(u64, u64, u64, u64, u64, u64);
long sys_ok(u64, u64, u64, u64, u64, u64);
long sys_open(u64, u64, u64, u64, u64, u64);
long sys_openat(u64, u64, u64, u64, u64, u64);
long sys_pipe(u64, u64, u64, u64, u64, u64);
long sys_pipe2(u64, u64, u64, u64, u64, u64);
long sys_poll(u64, u64, u64, u64, u64, u64);
long sys_ppoll(u64, u64, u64, u64, u64, u64);
long sys_prctl(u64, u64, u64, u64, u64, u64);
long sys_pread64(u64, u64, u64, u64, u64, u64);
long sys_prlimit64(u64, u64, u64, u64, u64, u64);
long sys_pselect6(u64, u64, u64, u64, u64, u64);
long sys_read(u64, u64, u64, u64, u64, u64);
long sys_readlink(u64, u64, u64, u64, u64, u64);
long sys_readlinkat(u64, u64, u64, u64, u64, u64);
long sys_readv(u64, u64, u64, u64, u64, u64);
long sys_rename(u64, u64, u64, u64, u64, u64);
long sys_renameat(u64, u64, u64, u64, u64, u64);
long sys_renameat2(u64, u64, u64, u64, u64, u64);
long sys_rmdir(u64, u64, u64, u64, u64, u64);
long sys_rseq(u64, u64, u64, u64, u64, u64);
long sys_rt_sigaction(u64, u64, u64, u64, u64, u64);
long sys_rt_sigprocmask(u64, u64, u64, u64, u64, u64);
long sys_sched_getaffinity(u64, u64, u64, u64, u64, u64);
long sys_sched_yield(u64, u64, u64, u64, u64, u64);
long sys_select(u64, u64, u64, u64, u64, u64);
long sys_sendfile(u64, u64, u64, u64, u64, u64);
long sys_set_robust_list(u64, u64, u64, u64, u64, u64);
long sys_set_tid_address(u64, u64, u64, u64, u64, u64);
long sys_setpgid(u64, u64, u64, u64, u64, u64);
long sys_setsid(u64, u64, u64, u64, u64, u64);
long sys_sigaltstack(u64, u64, u64, u64, u64, u64);
long sys_stat(u64, u64, u64, u64, u64, u64);
long sys_statfs(u64, u64, u64, u64, u64, u64);
long sys_statx(u64, u64, u64, u64, u64, u64);
long sys_symlink(u64, u64, u64, u64, u64, u64);
long sys_symlinkat(u64, u64, u64, u64, u64, u64);
long sys_sysinfo(u64, u64, u64, u64, u64, u64);
long sys_tgkill(u64, u64, u64, u64, u64, u64);
long sys_time(u64, u64, u64, u64, u64, u64);
long sys_times(u64, u64, u64, u64, u64, u64);
long sys_tkill(u64, u64, u64, u64, u64, u64);
long sys_umask(u64, u64, u64, u64, u64, u64);
long sys_uname(u64, u64, u64, u64, u64, u64);
long sys_unlink(u64, u64, u64, u64, u64, u64);
long sys_unlinkat(u64, u64, u64, u64, u64, u64);
long sys_utimensat(u64, u64, u64, u64, u64, u64);
long sys_wait4(u64, u64, u64, u64, u64, u64);
long sys_waitid(u64, u64, u64, u64, u64, u64);
long sys_write(u64, u64, u64, u64, u64, u64);
long sys_writev(u64, u64, u64, u64, u64, u64);
long sys_zero(u64, u64, u64, u64, u64, u64);

#endif /* LINUX_SYS_H */
