/* hello.c -- ring-3 app: greets, reports its pid, exits 0. */
#include "spk/app.h"

int main(void) {
    printf("hello from ring 3\n");
    printf("hello: my pid is %ld\n", sys_getpid());
    return 0;
}
