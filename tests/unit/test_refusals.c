/*
 * test_refusals.c - the tally of refusals without a known user (src/access/refusals.h), driven by the
 * times it is given: the first refusal of an address's window is to be audited, the later ones only
 * counted; a closed window hands over one summary (how many more, from when to when) once, through
 * refusal_closed or through the address's next refusal; a window without later refusals needs none;
 * addresses count apart; past REFUSAL_ADDRESSES open windows, new addresses share REFUSAL_OTHERS.
 */
#include "unit.h"

#include "access/refusals.h"

#include <stdio.h>

#define S ((int64_t)1000000)

static void test_first_audited_rest_counted(void **state)
{
    (void)state;
    refusal_tally *t = refusal_tally_new();
    refusal_summary sum[4];
    assert_int_equal(refusal_note(t, "10.0.0.1", 100 * S, &sum[0]), REFUSAL_FIRST);
    for (int i = 1; i <= 1000; i++)
        assert_int_equal(refusal_note(t, "10.0.0.1", 100 * S + i * 1000, &sum[0]), 0);
    assert_int_equal(refusal_note(t, "10.0.0.2", 101 * S, &sum[0]), REFUSAL_FIRST); /* its own window */
    assert_int_equal(refusal_closed(t, 159 * S, sum, 4), 0);                        /* not closed yet */
    assert_int_equal(refusal_closed(t, 160 * S, sum, 4), 1);
    assert_string_equal(sum[0].client, "10.0.0.1");
    assert_int_equal(sum[0].more, 1000);
    assert_int_equal(sum[0].first_us, 100 * S);
    assert_int_equal(sum[0].last_us, 100 * S + 1000 * 1000);
    assert_int_equal(refusal_closed(t, 160 * S, sum, 4), 0); /* handed over once */
    assert_int_equal(refusal_closed(t, 161 * S, sum, 4), 0); /* 10.0.0.2's window had no more: no summary */
    assert_int_equal(refusal_note(t, "10.0.0.1", 170 * S, &sum[0]), REFUSAL_FIRST); /* a new window */
    assert_int_equal(refusal_note(t, "10.0.0.1", 171 * S, &sum[0]), 0);
    assert_int_equal(refusal_closed(t, INT64_MAX, sum, 4), 1); /* the drain at shutdown */
    assert_int_equal(sum[0].more, 1);
    assert_int_equal(sum[0].first_us, 170 * S);
    refusal_tally_free(t);
}

static void test_next_refusal_hands_over_a_closed_window(void **state)
{
    (void)state;
    refusal_tally *t = refusal_tally_new();
    refusal_summary closed = {0}, sum[2];
    assert_int_equal(refusal_note(t, "::1", 10 * S, &closed), REFUSAL_FIRST);
    assert_int_equal(refusal_note(t, "::1", 20 * S, &closed), 0);
    assert_int_equal(refusal_note(t, "::1", 30 * S, &closed), 0);
    /* not swept: the address's next refusal after the window closes both hands it over and opens the next */
    assert_int_equal(refusal_note(t, "::1", 70 * S, &closed), REFUSAL_FIRST | REFUSAL_SUMMARY);
    assert_string_equal(closed.client, "::1");
    assert_int_equal(closed.more, 2);
    assert_int_equal(closed.first_us, 10 * S);
    assert_int_equal(closed.last_us, 30 * S);
    assert_int_equal(refusal_closed(t, INT64_MAX, sum, 2), 0); /* the new window has no more: nothing twice */
    refusal_tally_free(t);
}

static void test_many_addresses_share_the_others_window(void **state)
{
    (void)state;
    refusal_tally *t = refusal_tally_new();
    refusal_summary sum[REFUSAL_ADDRESSES + 2], closed;
    char ip[32];
    int firsts = 0;
    for (int i = 0; i < REFUSAL_ADDRESSES + 500; i++) {
        snprintf(ip, sizeof ip, "10.1.%d.%d", i / 256, i % 256);
        firsts += (refusal_note(t, ip, S + i, &closed) & REFUSAL_FIRST) != 0;
    }
    assert_int_equal(firsts, REFUSAL_ADDRESSES + 1); /* every address of the table, and the others' first */
    size_t n = 0, got;
    while ((got = refusal_closed(t, INT64_MAX, sum + n, 1)) == 1)
        n++;
    assert_int_equal(n, 1);
    assert_string_equal(sum[0].client, REFUSAL_OTHERS);
    assert_int_equal(sum[0].more, 499);
    /* the table is empty again: a known address opens its own window */
    assert_int_equal(refusal_note(t, "10.1.0.0", 200 * S, &closed), REFUSAL_FIRST);
    assert_int_equal(refusal_note(t, "10.9.9.9", 200 * S, &closed), REFUSAL_FIRST);
    assert_int_equal(refusal_closed(t, INT64_MAX, sum, 4), 0);
    refusal_tally_free(t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_first_audited_rest_counted),
        cmocka_unit_test(test_next_refusal_hands_over_a_closed_window),
        cmocka_unit_test(test_many_addresses_share_the_others_window),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
