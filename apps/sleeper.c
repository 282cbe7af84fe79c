/* sleeper.c -- ring-3 app: sleeps 50000 units of virtual time, then exits 0. */
#include "spk/app.h"

#define NAP 50000

int main(void) {
    printf("sleeper: sleeping\n");
    sys_sleep(NAP);
    printf("sleeper: awake\n");
    return 0;
}
