/* A generated CPM as a program (tests/test_ta_board.py builds it static for aarch64 and runs it
 * under qemu-user). Reads samples from argv[1], each the taps' floats in tap order then the backbone
 * logits (float32, native byte order), until the end of the file; for each prints the label and the
 * MirrorNet logits on one line. The model is driven as the TA drives it: reset, every tap, final.
 * Needs MIRRORC_DEBUG (for mirrorc_debug_run_final). */
#include <stdio.h>
#include <stdlib.h>

#include "mirrorc_model.h"

int main(int argc, char **argv)
{
    static const unsigned tap_floats[MIRRORC_NUM_TAPS] = MIRRORC_TAP_FLOATS;
    static float sample[MIRRORC_SINGLE_FLOATS];
    static mirrorc_state_t state;
    float logits[MIRRORC_NUM_CLASSES];
    FILE *in;

    if (argc != 2 || !(in = fopen(argv[1], "rb"))) {
        fprintf(stderr, "usage: %s SAMPLES.f32\n", argv[0]);
        return 2;
    }
    while (fread(sample, sizeof(float), MIRRORC_SINGLE_FLOATS, in) == MIRRORC_SINGLE_FLOATS) {
        const float *p = sample;
        int32_t label;
        unsigned k;
        int j;
        mirrorc_reset(&state);
        for (k = 0; k < MIRRORC_NUM_TAPS; k++) {
            mirrorc_run_tap(&state, k, p);
            p += tap_floats[k];
        }
        label = mirrorc_debug_run_final(&state, p, logits);
        printf("%d", (int)label);
        for (j = 0; j < MIRRORC_NUM_CLASSES; j++) printf(" %.9g", (double)logits[j]);
        printf("\n");
    }
    fclose(in);
    return 0;
}
