/* Stand-in programs for the CRI validation images, one static multi-call
 * binary chosen by the base name of argv[0]:
 *   pause       wait for SIGINT/SIGTERM, reap children (the sandbox image)
 *   nginx [ARGS] answer every HTTP request with 200 on port 80 (or the
 *               first all-digit argument), write /var/run/nginx.pid; the
 *               image passes "master process" as an argument so that
 *               /proc/1/cmdline shows it, as critest expects of nginx
 *   httpd [P]   the same, and print a line naming itself on stdout
 *   nonewprivs  print the effective uid (installed setuid root)
 *   ipcs -m     list System V shared memory segments (from /proc/sysvipc/shm)
 *   pgrep NAME  print the pids of processes whose name contains NAME
 * (Debian's busybox builds, static and dynamic, lack ipcs and pgrep.)
 * Written for pycontainerd's critest harness (tools/cri_harness.py).
 */
#include <dirent.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

static void on_term(int sig) { (void)sig; _exit(0); }

static void on_child(int sig) {
    (void)sig;
    int saved = errno;
    while (waitpid(-1, NULL, WNOHANG) > 0) {
    }
    errno = saved;
}

static void handle_signals(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_term;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sa.sa_handler = on_child;
    sa.sa_flags = SA_RESTART | SA_NOCLDSTOP;
    sigaction(SIGCHLD, &sa, NULL);
}

static int do_pause(void) {
    handle_signals();
    for (;;) pause();
    return 0;
}

static int serve(const char *name, int port) {
    handle_signals();
    FILE *pidfile = fopen("/var/run/nginx.pid", "w");
    if (pidfile != NULL) {
        fprintf(pidfile, "%d\n", (int)getpid());
        fclose(pidfile);
    }
    int fd = socket(AF_INET6, SOCK_STREAM, 0);
    int v6 = fd >= 0;
    if (!v6) fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) { perror("socket"); return 1; }
    int one = 1, zero = 0;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    int rc;
    if (v6) {
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof zero);
        struct sockaddr_in6 a6;
        memset(&a6, 0, sizeof a6);
        a6.sin6_family = AF_INET6;
        a6.sin6_port = htons((unsigned short)port);
        a6.sin6_addr = in6addr_any;
        rc = bind(fd, (struct sockaddr *)&a6, sizeof a6);
    } else {
        struct sockaddr_in a4;
        memset(&a4, 0, sizeof a4);
        a4.sin_family = AF_INET;
        a4.sin_port = htons((unsigned short)port);
        a4.sin_addr.s_addr = htonl(INADDR_ANY);
        rc = bind(fd, (struct sockaddr *)&a4, sizeof a4);
    }
    if (rc < 0 || listen(fd, 64) < 0) { perror("bind/listen"); return 1; }
    printf("%s: serving on port %d\n", name, port);
    fflush(stdout);
    static const char body[] = "<html><body>It works!</body></html>\n";
    char reply[256];
    int n = snprintf(reply, sizeof reply,
                     "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n"
                     "Content-Length: %zu\r\nConnection: close\r\n\r\n%s",
                     sizeof body - 1, body);
    for (;;) {
        int c = accept(fd, NULL, NULL);
        if (c < 0) continue;
        char buf[4096];
        ssize_t got = read(c, buf, sizeof buf);
        if (got > 0 && write(c, reply, (size_t)n) < 0) perror("write");
        close(c);
    }
}

static int do_ipcs(void) {
    FILE *f = fopen("/proc/sysvipc/shm", "r");
    if (f == NULL) { perror("/proc/sysvipc/shm"); return 1; }
    char line[512];
    printf("\n------ Shared Memory Segments --------\n");
    printf("key        shmid      owner      perms      bytes      nattch     status\n");
    if (fgets(line, sizeof line, f) == NULL) { fclose(f); return 0; } /* header */
    while (fgets(line, sizeof line, f) != NULL) {
        long key, shmid, perms, size, cpid, lpid, nattch, uid;
        if (sscanf(line, "%ld %ld %lo %ld %ld %ld %ld %ld", &key, &shmid, &perms, &size,
                   &cpid, &lpid, &nattch, &uid) == 8)
            printf("0x%08lx %-10ld %-10ld %-10lo %-10ld %-10ld\n", (unsigned long)key & 0xffffffffUL,
                   shmid, uid, perms & 0777, size, nattch);
    }
    fclose(f);
    printf("\n");
    return 0;
}

static int do_pgrep(const char *pattern) {
    DIR *d = opendir("/proc");
    if (d == NULL) { perror("/proc"); return 2; }
    int found = 0;
    pid_t self = getpid();
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (strspn(e->d_name, "0123456789") != strlen(e->d_name)) continue;
        if (atoi(e->d_name) == (int)self) continue;
        char path[300], comm[256] = "";
        snprintf(path, sizeof path, "/proc/%s/comm", e->d_name);
        FILE *f = fopen(path, "r");
        if (f == NULL) continue;
        if (fgets(comm, sizeof comm, f) != NULL) comm[strcspn(comm, "\n")] = '\0';
        fclose(f);
        if (strstr(comm, pattern) != NULL) {
            printf("%s\n", e->d_name);
            found = 1;
        }
    }
    closedir(d);
    return found ? 0 : 1;
}

int main(int argc, char **argv) {
    const char *name = strrchr(argv[0], '/');
    name = name ? name + 1 : argv[0];
    int port = 80;
    for (int i = 1; i < argc; i++) {
        if (argv[i][0] != '\0' && strspn(argv[i], "0123456789") == strlen(argv[i])) {
            port = atoi(argv[i]);
            break;
        }
    }
    if (strcmp(name, "pause") == 0) return do_pause();
    if (strcmp(name, "nginx") == 0 || strcmp(name, "httpd") == 0) return serve(name, port);
    if (strcmp(name, "nonewprivs") == 0) {
        printf("Effective uid: %d\n", (int)geteuid());
        return 0;
    }
    if (strcmp(name, "ipcs") == 0) return do_ipcs();
    if (strcmp(name, "pgrep") == 0 && argc > 1) return do_pgrep(argv[argc - 1]);
    fprintf(stderr, "%s: unknown program name\n", name);
    return 2;
}
