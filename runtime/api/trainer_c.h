/** \file
 * The C API of an embedded Kiln trainer, for C and for other languages' foreign-function
 * interfaces. It mirrors runtime/api/trainer.h; that header's notes on buffer layout, ownership,
 * errors and threading hold here too.
 *
 *   kiln_trainer* trainer = NULL;
 *   kiln_status* status = kiln_lenet5_trainer_create(&trainer);  // from lenet5_trainer.h
 *   if (!status) status = kiln_trainer_load_checkpoint(trainer, "lenet5.safetensors");
 *   if (!status) status = kiln_trainer_predict(trainer, images, batch, logits);
 *   if (status) {
 *     fprintf(stderr, "%s\n", kiln_status_message(status));
 *     kiln_status_free(status);
 *   }
 *   kiln_trainer_destroy(trainer);
 *
 * Every fallible function returns NULL on success or an error the caller owns and frees with
 * kiln_status_free. Strings passed in are borrowed for the call; strings returned are owned by
 * the object they come from.
 */
#ifndef KILN_RUNTIME_API_TRAINER_C_H_
#define KILN_RUNTIME_API_TRAINER_C_H_

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct kiln_trainer kiln_trainer;
typedef struct kiln_status kiln_status;

/** The error's message, valid until kiln_status_free. */
const char* kiln_status_message(const kiln_status* status);
void kiln_status_free(kiln_status* status);

typedef enum {
  KILN_OPTIMIZER_SGD = 0,
  KILN_OPTIMIZER_ADAM = 1,
  KILN_OPTIMIZER_ADAMW = 2
} kiln_optimizer;

/** kiln::Hyperparameters; kiln_hyperparameters_default fills in SGD's defaults. */
typedef struct {
  /* A kiln_optimizer value, held as int: C++ may not read an enum object outside its range. */
  int optimizer;
  float lr;
  float momentum;
  int nesterov;
  float weight_decay;
  double beta1, beta2;
  float eps;
  float max_grad_norm;
} kiln_hyperparameters;

kiln_hyperparameters kiln_hyperparameters_default(void);

/** Creates a trainer of the compiled model `model_name` linked into this program; the
 * generated kiln_<model>_trainer_create functions also make sure the model is linked. */
kiln_status* kiln_trainer_create(const char* model_name, kiln_trainer** trainer);
/** Frees the trainer; NULL is allowed. */
void kiln_trainer_destroy(kiln_trainer* trainer);

/** Sets the threads of the pool that runs all compiled kernels (0 or less: one per core). */
void kiln_set_threads(int threads);

/* The model. The name is valid while the trainer lives; shapes are per sample. */
const char* kiln_trainer_model_name(const kiln_trainer* trainer);
int64_t kiln_trainer_input_size(const kiln_trainer* trainer);
int64_t kiln_trainer_output_size(const kiln_trainer* trainer);
int kiln_trainer_num_classes(const kiln_trainer* trainer);
int kiln_trainer_batch_size(const kiln_trainer* trainer);
int64_t kiln_trainer_parameter_count(const kiln_trainer* trainer);
/** Number of named parameters, and the name of the i-th (valid while the trainer lives; NULL
 * for an index outside [0, kiln_trainer_num_parameters)). */
int kiln_trainer_num_parameters(const kiln_trainer* trainer);
const char* kiln_trainer_parameter_name(const kiln_trainer* trainer, int index);
/** Number of floats of the parameter `name` in *size. */
kiln_status* kiln_trainer_parameter_size(const kiln_trainer* trainer, const char* name,
                                         int64_t* size);

/* State. */
kiln_status* kiln_trainer_init_parameters(kiln_trainer* trainer, uint64_t seed);
kiln_status* kiln_trainer_load_checkpoint(kiln_trainer* trainer, const char* path);
kiln_status* kiln_trainer_save_checkpoint(const kiln_trainer* trainer, const char* path);
kiln_status* kiln_trainer_get_parameter(const kiln_trainer* trainer, const char* name,
                                        float* values, size_t count);
kiln_status* kiln_trainer_set_parameter(kiln_trainer* trainer, const char* name,
                                        const float* values, size_t count);
kiln_status* kiln_trainer_set_hyperparameters(kiln_trainer* trainer,
                                              const kiln_hyperparameters* hyperparameters);

/* Training. `loss` and `correct` may be NULL. Regression models take `targets` instead of
 * labels (batch x output_size floats). */
kiln_status* kiln_trainer_train_step(kiln_trainer* trainer, const float* inputs,
                                     const int32_t* labels, int batch, float* loss, int* correct);
kiln_status* kiln_trainer_train_step_targets(kiln_trainer* trainer, const float* inputs,
                                             const float* targets, int batch, float* loss);
kiln_status* kiln_trainer_compute_gradients(kiln_trainer* trainer, const float* inputs,
                                            const int32_t* labels, int batch, float* loss,
                                            int* correct);
kiln_status* kiln_trainer_compute_gradients_targets(kiln_trainer* trainer, const float* inputs,
                                                    const float* targets, int batch,
                                                    float* loss);
kiln_status* kiln_trainer_get_gradients(const kiln_trainer* trainer, float* gradients,
                                        size_t count);
kiln_status* kiln_trainer_apply_gradients(kiln_trainer* trainer, const float* gradients,
                                          size_t count);

/* Inference. */
kiln_status* kiln_trainer_predict(kiln_trainer* trainer, const float* inputs, int batch,
                                  float* outputs);

#ifdef __cplusplus
}  // extern "C"
#endif

#endif  // KILN_RUNTIME_API_TRAINER_C_H_
