#include <hark.h>
int main(void) { return 0; }
