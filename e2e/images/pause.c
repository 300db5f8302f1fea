/* The pod sandbox process: holds the pod's namespaces, reaps zombies, exits on signal.
 * Built with `gcc -static` by the harness (e2e/src/images.rs) into stateward.local/pause. */
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

static void on_term(int sig) {
  (void)sig;
  _exit(0);
}

static void on_child(int sig) {
  (void)sig;
  while (waitpid(-1, NULL, WNOHANG) > 0) {
  }
}

int main(void) {
  if (getpid() != 1) {
    /* Not fatal: useful when run by hand. */
  }
  signal(SIGINT, on_term);
  signal(SIGTERM, on_term);
  signal(SIGCHLD, on_child);
  for (;;) {
    pause();
  }
  return 0;
}
