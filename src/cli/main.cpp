// kiln: the command-line entry point; each verb lives in its own file.
#include <cstdio>

int main(int argc, char** argv) {
  std::fprintf(stderr, "kiln: no verb given\n");
  return 2;
}
