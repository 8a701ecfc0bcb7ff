/* The version: macros generated from configure.ac, and the run-time
 * functions of the library the test is linked against. */
#include "config.h"

#include <stdio.h>

#include "util.h"

START_TEST(version_macros_are_those_of_configure) {
  char s[32];
  snprintf(s, sizeof(s), "%d.%d.%d", HARK_VERSION_MAJOR, HARK_VERSION_MINOR,
           HARK_VERSION_PATCH);
  ck_assert_str_eq(s, PACKAGE_VERSION);
  ck_assert_str_eq(HARK_VERSION_STRING, PACKAGE_VERSION);
}
END_TEST

START_TEST(version_hex_packs_major_minor_patch_in_one_byte_each) {
  ck_assert_int_eq((HARK_VERSION_HEX >> 16) & 0xff, HARK_VERSION_MAJOR);
  ck_assert_int_eq((HARK_VERSION_HEX >> 8) & 0xff, HARK_VERSION_MINOR);
  ck_assert_int_eq(HARK_VERSION_HEX & 0xff, HARK_VERSION_PATCH);
  ck_assert_int_eq(HARK_VERSION_HEX >> 24, 0);
}
END_TEST

START_TEST(version_at_run_time_equals_the_macros) {
  ck_assert_uint_eq(hark_version(), HARK_VERSION_HEX);
  ck_assert_str_eq(hark_version_string(), HARK_VERSION_STRING);
}
END_TEST

START_TEST(version_string_is_static) {
  /* the same storage every time: the caller neither frees nor copies it */
  ck_assert_ptr_eq(hark_version_string(), hark_version_string());
}
END_TEST

int main(void) {
  Suite *s = suite_create("version");
  TCase *tc = tcase_create("version");
  tcase_add_test(tc, version_macros_are_those_of_configure);
  tcase_add_test(tc, version_hex_packs_major_minor_patch_in_one_byte_each);
  tcase_add_test(tc, version_at_run_time_equals_the_macros);
  tcase_add_test(tc, version_string_is_static);
  suite_add_tcase(s, tc);
  return test_run(s);
}
