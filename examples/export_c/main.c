/* SGD on a 2-layer MLP in plain C, with the loss gradient graphc exported.
 *
 * export_mlp.py writes mlp_grad.so, mlp_grad.h (the C ABI: see the header)
 * and mlp_data.bin (initial parameters, data and labels, raw, in the order of
 * mlp_grad's inputs). Build and run (README.md):
 *
 *     python examples/export_c/export_mlp.py -o build
 *     cc -std=c11 -O2 -I build examples/export_c/main.c -L build -l:mlp_grad.so \
 *        -Wl,-rpath,"$PWD/build" -o build/mlp_sgd
 *     build/mlp_sgd build/mlp_data.bin 20 0.1
 *
 * Each step calls mlp_grad once (the loss and the gradients of all four
 * parameters), prints the loss, and updates the parameters: p -= lr * grad.
 * Nothing here knows about Python or graphc: only the header and the .so.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mlp_grad.h"

/* The program's assumptions about the export, checked when it compiles:
 * inputs w1, b1, w2, b2, x, labels; outputs loss, then one gradient per parameter. */
_Static_assert(MLP_GRAD_NUM_INPUTS == 6 && MLP_GRAD_NUM_OUTPUTS == 5, "expects mlp_grad(w1, b1, w2, b2, x, labels)");
_Static_assert(MLP_GRAD_IN5_DTYPE == GRAPHC_INT32, "labels are int32");
_Static_assert(MLP_GRAD_OUT0_SIZE == 1, "the loss is a scalar");
_Static_assert(MLP_GRAD_OUT1_SIZE == MLP_GRAD_IN0_SIZE && MLP_GRAD_OUT2_SIZE == MLP_GRAD_IN1_SIZE &&
               MLP_GRAD_OUT3_SIZE == MLP_GRAD_IN2_SIZE && MLP_GRAD_OUT4_SIZE == MLP_GRAD_IN3_SIZE,
               "one gradient per parameter, in parameter order");

#define NUM_PARAMS 4

static const char* dtype_name(int code) {
    switch (code) {
        case GRAPHC_FLOAT32: return "float32";
        case GRAPHC_FLOAT64: return "float64";
        case GRAPHC_INT32: return "int32";
        case GRAPHC_INT64: return "int64";
        case GRAPHC_BOOL: return "bool";
        default: return "?";
    }
}

/* The signature as the library reports it at run time (mlp_grad_describe). */
static void print_signature(void) {
    for (int is_output = 0; is_output <= 1; ++is_output) {
        int dtype, ndim;
        const int64_t* shape;
        printf("%s:", is_output ? "outputs" : "inputs");
        for (int i = 0; mlp_grad_describe(is_output, i, &dtype, &ndim, &shape) == 0; ++i) {
            printf(" %s[", dtype_name(dtype));
            for (int d = 0; d < ndim; ++d) printf(d ? ", %lld" : "%lld", (long long)shape[d]);
            printf("]");
        }
        printf("\n");
    }
}

static void* read_array(FILE* f, size_t count, size_t itemsize, const char* what, const char* path) {
    void* p = malloc(count * itemsize);
    if (!p) {
        fprintf(stderr, "out of memory\n");
        exit(1);
    }
    if (fread(p, itemsize, count, f) != count) {
        fprintf(stderr, "%s: too short while reading %s (written by export_mlp.py for this header?)\n", path, what);
        exit(1);
    }
    return p;
}

int main(int argc, char** argv) {
    if (argc < 2 || argc > 4) {
        fprintf(stderr, "usage: %s DATA_FILE [STEPS=20] [LR=0.1]\n", argv[0]);
        return 2;
    }
    const char* path = argv[1];
    int steps = argc > 2 ? atoi(argv[2]) : 20;
    float lr = argc > 3 ? strtof(argv[3], NULL) : 0.1f;

    FILE* f = fopen(path, "rb");
    if (!f) {
        perror(path);
        return 1;
    }
    const size_t sizes[NUM_PARAMS] = {MLP_GRAD_IN0_SIZE, MLP_GRAD_IN1_SIZE, MLP_GRAD_IN2_SIZE, MLP_GRAD_IN3_SIZE};
    const char* names[NUM_PARAMS] = {"w1", "b1", "w2", "b2"};
    float* params[NUM_PARAMS];
    float* grads[NUM_PARAMS];
    for (int k = 0; k < NUM_PARAMS; ++k) {
        params[k] = read_array(f, sizes[k], sizeof(float), names[k], path);
        grads[k] = malloc(sizes[k] * sizeof(float));
        if (!grads[k]) {
            fprintf(stderr, "out of memory\n");
            return 1;
        }
    }
    float* x = read_array(f, MLP_GRAD_IN4_SIZE, sizeof(float), "x", path);
    int32_t* labels = read_array(f, MLP_GRAD_IN5_SIZE, sizeof(int32_t), "labels", path);
    if (fgetc(f) != EOF) {
        fprintf(stderr, "%s: longer than the inputs of mlp_grad.h (written for another export?)\n", path);
        return 1;
    }
    fclose(f);

    print_signature();
    for (int step = 0; step < steps; ++step) {
        float loss;
        int rc = mlp_grad(params[0], params[1], params[2], params[3], x, labels,
                          &loss, grads[0], grads[1], grads[2], grads[3]);
        if (rc != 0) {
            fprintf(stderr, "mlp_grad failed with error %d\n", rc);
            return 1;
        }
        /* %.9g prints a float exactly enough to read it back bit for bit */
        printf("step %d loss %.9g\n", step, loss);
        for (int k = 0; k < NUM_PARAMS; ++k)
            for (size_t i = 0; i < sizes[k]; ++i) params[k][i] -= lr * grads[k][i];
    }
    for (int k = 0; k < NUM_PARAMS; ++k) {
        free(params[k]);
        free(grads[k]);
    }
    free(x);
    free(labels);
    return 0;
}
