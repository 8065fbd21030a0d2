/* sqlite-tensor: the names the engine and Python share, written once (issue #12).
**
** Each list is indexed by the engine's code for the name (OP_*, ACT_*, DT_* in
** cython/engine.pxd) and ends with NULL. The engine parses layer lists with them
** (inference/model_plan.pxi) and exports them to Python (_engine.LAYER_OPS, ...), whose
** modules (layers.py, residuals.py) take them from there instead of typing them again.
** Included only by the engine (static data). */
#ifndef ST_NAMES_H
#define ST_NAMES_H

/* layer kinds: OP_DENSE, OP_EMBEDDING, OP_EMBEDDING_BAG, OP_ACTIVATION, OP_ENCODER */
static const char *const st_op_names[] = {"dense",      "embedding", "embedding_bag",
                                          "activation", "encoder",   0};
/* an encoder's architectures and poolings (ENC_POOL_*) */
static const char *const st_encoder_archs[] = {"bert", "distilbert", 0};
static const char *const st_encoder_poolings[] = {"mean", "cls", "max", 0};
/* an encoder's tensors, by architecture (st_encoder_archs' order), after its prefix: each
** a name to which ".weight" (and ".bias") is added; a block's after "<block>.<i>.".
** token_type 0: the architecture has none (DistilBERT). */
typedef struct {
    const char *word, *position, *token_type, *norm, *block;
    const char *query, *key, *value, *attn_out, *attn_norm, *inter, *out, *out_norm;
} st_encoder_names;
static const st_encoder_names st_encoder_tensor_names[] = {
    {"embeddings.word_embeddings", "embeddings.position_embeddings",
     "embeddings.token_type_embeddings", "embeddings.LayerNorm", "encoder.layer",
     "attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense",
     "attention.output.LayerNorm", "intermediate.dense", "output.dense", "output.LayerNorm"},
    {"embeddings.word_embeddings", "embeddings.position_embeddings", 0, "embeddings.LayerNorm",
     "transformer.layer", "attention.q_lin", "attention.k_lin", "attention.v_lin",
     "attention.out_lin", "sa_layer_norm", "ffn.lin1", "ffn.lin2", "output_layer_norm"},
};
/* activations: ACT_IDENTITY .. ACT_SOFTMAX */
static const char *const st_act_names[] = {"identity", "relu",    "sigmoid", "tanh",
                                           "gelu",     "softmax", 0};
/* the weight dtypes the kernels compute with (widened to float32): DT_F32 .. DT_F64 */
static const char *const st_dtype_names[] = {"float32", "float16", "bfloat16", "float64", 0};
/* an embedding_bag's modes: index 0 sums, 1 takes the mean (the default) */
static const char *const st_bag_modes[] = {"sum", "mean", 0};
/* residual kinds, by code (RES_LOWRANK = 1, RES_QUANTIZED = 2, RES_SIGN = 3, RES_SPARSE = 4,
** RES_SIGN_SPARSE = 5; 0 is none) */
static const char *const st_residual_kind_names[] = {
    "none", "low-rank", "quantized", "sign", "sparse", "sign+sparse", 0};
/* a sign residual's scales, by param (RES_SIGN_TILE = 1: one per tile, RES_SIGN_ROW = 2:
** one per tile row); 0 is no such param */
static const char *const st_residual_sign_scales[] = {"none", "tile", "row", 0};
/* the bit widths a quantized residual may take; 0 ends the list */
static const int st_residual_bits[] = {2, 4, 8, 0};
#endif
