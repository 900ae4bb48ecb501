// The one text form of a layer program, written by ntkfast.arch (Arch.program_text) and read here by the
// bindings and by the CUDA emulation test alike:
//
//   ntkfast-program 1
//   input image H W C          (or: input vector D)
//   conv KY KX SAME|VALID|CIRCULAR W_STD B_STD
//   relu
//   avgpool PY PX SY SX SAME|VALID
//   gaussianpool S SIGMA       (SIGMA 0: the default S / sqrt 2)
//   globalavgpool
//   flatten
//   dense W_STD B_STD
//
// one layer per line, in order; numbers in decimal (Python's repr round-trips exactly through strtod).
#pragma once
#include <string>

#include "core/program.hpp"

namespace ntkfast {

// Parses the text form; throws ProgramError naming the line on anything malformed.
ProgramSpec parse_program(const std::string& text);

// The text form of a spec (parse_program(format_program(s)) == s).
std::string format_program(const ProgramSpec& spec);

}  // namespace ntkfast
