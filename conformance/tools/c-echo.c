/*
 * The floor for one caller between two processes: a blocking 512-byte
 * echo over loopback TCP (TCP_NODELAY) between a parent and a forked
 * child, with no protocol and no runtime. grid-bench's README figures
 * compare against it.
 *
 *   cc -O2 -o /tmp/c-echo conformance/tools/c-echo.c
 *   /tmp/c-echo        # both ends block in recv: an idle CPU is woken per message
 *   /tmp/c-echo spin   # both ends poll recv without blocking: no CPU idles
 *   taskset -c 0 /tmp/c-echo   # both processes on one CPU
 *
 * Prints the median and 99th percentile round trip of 100 000 echoes.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

enum { SIZE = 512, ROUNDS = 100000 };

static int spin;

static void recv_all(int fd, char *buf, int n) {
    int got = 0;
    while (got < n) {
        int r = recv(fd, buf + got, n - got, spin ? MSG_DONTWAIT : 0);
        if (r < 0 && (errno == EAGAIN || errno == EINTR))
            continue;
        if (r <= 0) {
            perror("recv");
            exit(1);
        }
        got += r;
    }
}

static void send_all(int fd, const char *buf, int n) {
    int sent = 0;
    while (sent < n) {
        int r = send(fd, buf + sent, n - sent, 0);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            perror("send");
            exit(1);
        }
        sent += r;
    }
}

static double now_us(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e6 + t.tv_nsec / 1e3;
}

static int by_value(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv) {
    spin = argc > 1 && strcmp(argv[1], "spin") == 0;
    int one = 1;
    char buf[SIZE];
    memset(buf, 0x5a, SIZE);

    struct sockaddr_in addr = {0};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof addr;
    int listener = socket(AF_INET, SOCK_STREAM, 0);
    if (listener < 0 || bind(listener, (struct sockaddr *)&addr, len) < 0 ||
        listen(listener, 1) < 0 ||
        getsockname(listener, (struct sockaddr *)&addr, &len) < 0) {
        perror("listen");
        return 1;
    }

    if (fork() == 0) {
        int s = accept(listener, NULL, NULL);
        setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        for (int i = 0; i < ROUNDS; i++) {
            recv_all(s, buf, SIZE);
            send_all(s, buf, SIZE);
        }
        return 0;
    }

    int s = socket(AF_INET, SOCK_STREAM, 0);
    if (connect(s, (struct sockaddr *)&addr, sizeof addr) < 0) {
        perror("connect");
        return 1;
    }
    setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    double *rtt = malloc(ROUNDS * sizeof *rtt);
    for (int i = 0; i < ROUNDS; i++) {
        double start = now_us();
        send_all(s, buf, SIZE);
        recv_all(s, buf, SIZE);
        rtt[i] = now_us() - start;
    }
    qsort(rtt, ROUNDS, sizeof *rtt, by_value);
    printf("%s: p50 %.1f us, p99 %.1f us over %d round trips of %d bytes\n",
           spin ? "spin" : "blocking", rtt[ROUNDS / 2], rtt[ROUNDS * 99 / 100], ROUNDS, SIZE);
    return 0;
}
