/* Shared by the misbehaving apps (apps/bad_*.c): print "<name>: trying",
 * commit the misdeed, and if it did not fault print "<name>: <WHAT>
 * SUCCEEDED" and exit 1. Their kernel must kill them at the misdeed. */
#ifndef ATTEMPT_H
#define ATTEMPT_H

#include "spk/app.h"

static inline int attempt(const char *name, const char *what, void (*misdeed)(void)) {
    printf("%s: trying\n", name);
    misdeed();
    printf("%s: %s SUCCEEDED\n", name, what);
    return 1;
}

#endif
