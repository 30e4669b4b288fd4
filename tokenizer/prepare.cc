#include "tokenizer/prepare.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/status.h"
#include "tokenizer/sequence_split.h"

namespace paft::tokenizer {
namespace {

using json = nlohmann::ordered_json;  // records keep their key order (chat templates see it)

std::string DetectFormat(const json& record) {
  if (record.contains("chosen") || record.contains("chosen_ids")) return "preference";
  if (record.contains("messages")) return "messages";
  if (record.contains("text")) return "text";
  return "prompt_completion";
}

// A string field tokenized, or an *_ids field taken as is.
// `vocab_limit` > 0: ids must be below it.
absl::StatusOr<std::vector<uint32_t>> Field(const json& record, const std::string& key,
                                            const Tokenizer* tokenizer, int64_t vocab_limit,
                                            int64_t line, bool required) {
  const std::string ids_key = key + "_ids";
  if (record.contains(ids_key)) {
    const json& ids = record[ids_key];
    if (!ids.is_array()) {
      return absl::InvalidArgumentError(absl::StrCat("line ", line, ": '", ids_key, "' must be a list of token ids"));
    }
    std::vector<uint32_t> out;
    for (const json& id : ids) {
      if (!id.is_number_unsigned() || id.get<uint64_t>() > UINT32_MAX) {
        return absl::InvalidArgumentError(
            absl::StrCat("line ", line, ": '", ids_key, "' holds a non-token value"));
      }
      out.push_back(id.get<uint32_t>());
    }
    if (vocab_limit > 0) {
      for (uint32_t id : out) {
        if (id >= vocab_limit) {
          return absl::InvalidArgumentError(absl::StrCat("line ", line, ": '", ids_key, "' id ",
                                                         id, " is outside the vocabulary of ",
                                                         vocab_limit));
        }
      }
    }
    return out;
  }
  if (!record.contains(key)) {
    if (!required) return std::vector<uint32_t>();
    return absl::InvalidArgumentError(
        absl::StrCat("line ", line, ": missing '", key, "' (or '", ids_key, "')"));
  }
  if (!record[key].is_string()) {
    return absl::InvalidArgumentError(absl::StrCat("line ", line, ": '", key, "' must be a string"));
  }
  if (tokenizer == nullptr) {
    return absl::FailedPreconditionError(
        absl::StrCat("line ", line, ": '", key, "' is text, but no tokenizer was given"));
  }
  return tokenizer->Encode(record[key].get<std::string>());
}

// Fits prompt + each completion into max_length as TRL truncates (see PrepareOptions). Returns
// false to drop the example.
bool Fit(std::vector<uint32_t>& prompt, std::vector<std::vector<uint32_t>*> completions,
         std::vector<uint32_t>* runs, const PrepareOptions& options, bool* truncated) {
  const int64_t max_len = options.max_length;
  size_t longest = 0;
  for (auto* c : completions) longest = std::max(longest, c->size());
  if (static_cast<int64_t>(prompt.size() + longest) <= max_len) return true;
  if (options.truncation_mode == "drop") return false;
  *truncated = true;
  if (options.truncation_mode == "keep_end") {  // sequence[-max_len:] (one completion: SFT)
    std::vector<uint32_t>& c = *completions[0];
    const int64_t excess = static_cast<int64_t>(prompt.size() + c.size()) - max_len;
    const int64_t from_prompt = std::min<int64_t>(excess, static_cast<int64_t>(prompt.size()));
    prompt.erase(prompt.begin(), prompt.begin() + from_prompt);
    const int64_t from_completion = excess - from_prompt;
    c.erase(c.begin(), c.begin() + from_completion);
    if (runs != nullptr) DropRunsFront(runs, from_completion);
  } else {  // keep_start: sequence[:max_len], each completion on its own
    for (auto* c : completions) {
      const int64_t room = std::max<int64_t>(0, max_len - static_cast<int64_t>(prompt.size()));
      if (static_cast<int64_t>(c->size()) > room) c->resize(room);
    }
    if (runs != nullptr) TruncateRuns(runs, static_cast<int64_t>(completions[0]->size()));
  }
  for (auto* c : completions) {
    if (c->empty()) return false;  // nothing left to learn from
  }
  if (runs != nullptr && !runs->empty()) {
    for (int64_t k = 0; k < static_cast<int64_t>(completions[0]->size()); ++k) {
      if (TrainedToken(*runs, k)) return true;
    }
    return false;  // only untrained turns left
  }
  return true;
}

// A message's role ("" when absent or not a string).
std::string Role(const json& message) {
  if (!message.is_object()) return "";
  auto it = message.find("role");
  return it != message.end() && it->is_string() ? it->get<std::string>() : "";
}

// Every assistant turn of a conversation trained: the whole rendering encoded once; turn i spans
// the tokens from where the rendering of the messages before it (with the generation prompt)
// ends to where the rendering up to it ends. Each of those renderings must be a prefix of the
// whole one (a template that renders a turn differently once the conversation goes on, like
// Qwen3's reasoning blocks, is refused); a token boundary that falls inside a merged token is
// counted as a mismatch and kept at the prefix's token count (the prompt/answer split of the
// other forms starts the answer where the tokens diverge instead: sequence_split.h).
absl::Status SplitAllTurns(const Tokenizer& tokenizer, const RenderChatFn& render,
                           const json& messages, TokenExample* e, int64_t* mismatches) {
  PAFT_ASSIGN_OR_RETURN(std::string whole, render(messages, false));
  PAFT_ASSIGN_OR_RETURN(std::vector<uint32_t> all, tokenizer.Encode(whole));
  std::vector<std::pair<int64_t, int64_t>> spans;  // token ranges of the assistant turns
  bool mismatch = false;
  for (size_t i = 0; i < messages.size(); ++i) {
    if (Role(messages[i]) != "assistant") continue;
    const json before(messages.begin(), messages.begin() + static_cast<std::ptrdiff_t>(i));
    const json through(messages.begin(), messages.begin() + static_cast<std::ptrdiff_t>(i) + 1);
    PAFT_ASSIGN_OR_RETURN(std::string start_text, render(before, true));
    PAFT_ASSIGN_OR_RETURN(std::string end_text, render(through, false));
    for (const std::string* part : {&start_text, &end_text}) {
      if (whole.compare(0, part->size(), *part) != 0) {
        return absl::InvalidArgumentError(absl::StrCat(
            "the chat template renders the conversation up to message ", i,
            " differently from the start of the whole conversation; assistant_turns=all needs "
            "a template whose earlier turns render the same (use assistant_turns=last)"));
      }
    }
    int64_t bounds[2];
    for (int side = 0; side < 2; ++side) {
      PAFT_ASSIGN_OR_RETURN(std::vector<uint32_t> prefix,
                            tokenizer.Encode(side == 0 ? start_text : end_text));
      const size_t n = std::min(prefix.size(), all.size());
      if (!std::equal(prefix.begin(), prefix.begin() + n, all.begin()) || n < prefix.size()) {
        mismatch = true;
      }
      bounds[side] = static_cast<int64_t>(n);
    }
    if (!spans.empty() && bounds[0] < spans.back().second) bounds[0] = spans.back().second;
    if (bounds[1] > bounds[0]) spans.emplace_back(bounds[0], bounds[1]);
  }
  if (spans.empty()) return absl::InvalidArgumentError("the conversation has no assistant turn");
  if (mismatch) ++*mismatches;
  const int64_t first = spans.front().first;
  e->prompt.assign(all.begin(), all.begin() + first);
  e->completion.assign(all.begin() + first, all.end());
  // Runs over the completion: trained, untrained, trained, ... (a trailing untrained run for
  // what follows the last turn).
  int64_t at = first;
  for (const auto& [begin, end] : spans) {
    if (begin > at) e->loss_runs.push_back(static_cast<uint32_t>(begin - at));  // untrained gap
    if (e->loss_runs.size() % 2 == 1) {
      e->loss_runs.back() += static_cast<uint32_t>(end - begin);  // adjoins the trained run
    } else {
      e->loss_runs.push_back(static_cast<uint32_t>(end - begin));
    }
    at = end;
  }
  if (static_cast<int64_t>(all.size()) > at) {
    e->loss_runs.push_back(static_cast<uint32_t>(static_cast<int64_t>(all.size()) - at));
  }
  return absl::OkStatus();
}

// A record's field that is a list of messages (conversational TRL data), or null.
const json* Conversation(const json& record, const char* key) {
  auto it = record.find(key);
  return it != record.end() && it->is_array() ? &*it : nullptr;
}

// A conversational record's prompt and answers with the model's chat template, as TRL: the
// prompt rendered with the generation prompt, prompt + each answer without; no BOS or EOS added
// (the template writes its own).
absl::StatusOr<PromptSplit> SplitConversation(const Tokenizer* tokenizer, const RenderChatFn& render,
                                              const json& record,
                                              const std::vector<const char*>& answers) {
  if (tokenizer == nullptr) return absl::FailedPreconditionError("conversations need a tokenizer");
  const json& prompt = record["prompt"];
  PAFT_ASSIGN_OR_RETURN(std::string prompt_text, render(prompt, true));
  std::vector<std::string> wholes;
  for (const char* key : answers) {
    json whole = prompt;
    for (const json& message : record[key]) whole.push_back(message);
    PAFT_ASSIGN_OR_RETURN(std::string text, render(whole, false));
    wholes.push_back(std::move(text));
  }
  return SplitAtPrompt(*tokenizer, prompt_text, wholes, -1, -1);
}

}  // namespace

absl::StatusOr<std::pair<std::string, std::string>> RenderChat(const json& messages,
                                                                const std::string& chat_template) {
  if (!messages.is_array() || messages.empty()) {
    return absl::InvalidArgumentError("'messages' must be a non-empty list");
  }
  const json& last = messages.back();
  if (Role(last) != "assistant") {
    return absl::InvalidArgumentError("the last message must have role 'assistant'");
  }
  auto render = [&](const json& m, bool open_only) -> absl::StatusOr<std::string> {
    if (!m.is_object() || !m.contains("role") || !m["role"].is_string() ||
        !m.contains("content") || !m["content"].is_string()) {
      return absl::InvalidArgumentError("every message needs string 'role' and 'content'");
    }
    const std::string role = m["role"], content = m["content"];
    if (chat_template == "chatml") {
      return open_only ? absl::StrCat("<|im_start|>", role, "\n")
                       : absl::StrCat("<|im_start|>", role, "\n", content, "<|im_end|>\n");
    }
    if (chat_template == "plain") {
      return open_only ? absl::StrCat(role, ": ") : absl::StrCat(role, ": ", content, "\n");
    }
    return absl::InvalidArgumentError(
        absl::StrCat("unknown chat template '", chat_template, "' (chatml, plain)"));
  };
  std::string prompt;
  for (size_t i = 0; i + 1 < messages.size(); ++i) {
    PAFT_ASSIGN_OR_RETURN(std::string part, render(messages[i], false));
    prompt += part;
  }
  PAFT_ASSIGN_OR_RETURN(std::string open, render(last, true));
  prompt += open;
  std::string completion = last["content"];
  if (chat_template == "chatml") completion += "<|im_end|>";
  return std::make_pair(prompt, completion);
}

absl::StatusOr<PrepareResult> PrepareJsonl(const std::string& jsonl, const PrepareOptions& options,
                                           const Tokenizer* tokenizer) {
  if (options.max_length < 2) return absl::InvalidArgumentError("max_length must be >= 2");
  if (options.assistant_turns != "last" && options.assistant_turns != "all") {
    return absl::InvalidArgumentError(absl::StrCat("unknown assistant_turns '",
                                                   options.assistant_turns, "' (last, all)"));
  }
  if (options.assistant_turns == "all" && !options.render_chat) {
    return absl::InvalidArgumentError(
        "assistant_turns=all needs the model's own chat template (tokenizer_config.json)");
  }
  if (options.truncation_mode != "keep_end" && options.truncation_mode != "keep_start" &&
      options.truncation_mode != "drop") {
    return absl::InvalidArgumentError(absl::StrCat("unknown truncation_mode '", options.truncation_mode,
                                                   "' (keep_end, keep_start, drop)"));
  }
  // Ids must fit the model's vocabulary and the tokenizer's, whichever is given (both: the
  // smaller).
  int64_t vocab_limit = options.vocab_size;
  if (tokenizer != nullptr && (vocab_limit <= 0 || tokenizer->vocab_size() < vocab_limit)) {
    vocab_limit = tokenizer->vocab_size();
  }
  PrepareResult result;
  std::string format = options.format;
  int64_t line_number = 0;
  for (absl::string_view line : absl::StrSplit(jsonl, '\n')) {
    ++line_number;
    if (line.find_first_not_of(" \t\r") == absl::string_view::npos) continue;
    json record = json::parse(line.begin(), line.end(), nullptr, false);
    if (record.is_discarded() || !record.is_object()) {
      return absl::InvalidArgumentError(absl::StrCat("line ", line_number, ": not a JSON object"));
    }
    if (format == "auto") format = DetectFormat(record);
    const bool preference = format == "preference";
    if (result.examples.empty() && result.dropped == 0) {
      result.kind = preference ? DatasetKind::kPreference : DatasetKind::kSft;
    }
    TokenExample e;
    bool special_tokens_added = false;  // BOS/EOS placed already (TRL's whole sequences)
    auto error_at = [&](const absl::Status& status) {
      return absl::InvalidArgumentError(absl::StrCat("line ", line_number, ": ", status.message()));
    };
    if (preference && !record.contains("prompt") && !record.contains("prompt_ids") &&
        record.contains("chosen") && record.contains("rejected")) {
      // TRL's implicit prompt: the beginning both answers share.
      auto parts = ExtractPrompt(record["chosen"], record["rejected"]);
      if (!parts.ok()) return error_at(parts.status());
      record["prompt"] = (*parts)[0];
      record["chosen"] = (*parts)[1];
      record["rejected"] = (*parts)[2];
    }
    if (format == "messages" && options.assistant_turns == "last") {
      // TRL's conversational prompt-completion: the last assistant message is the completion.
      const json& messages = record.value("messages", json());
      if (!messages.is_array() || messages.empty() || Role(messages.back()) != "assistant") {
        return error_at(absl::InvalidArgumentError(
            "'messages' must be a list ending with an 'assistant' message"));
      }
      record["prompt"] = json(messages.begin(), messages.end() - 1);
      record["completion"] = json::array({messages.back()});
    }
    const std::vector<const char*> answers =
        preference ? std::vector<const char*>{"chosen", "rejected"} : std::vector<const char*>{"completion"};
    bool text = tokenizer != nullptr && record.contains("prompt") && record["prompt"].is_string();
    bool chat = Conversation(record, "prompt") != nullptr;
    for (const char* key : answers) {
      text = text && record.contains(key) && record[key].is_string();
      chat = chat && Conversation(record, key) != nullptr;
    }
    if (format == "messages" && options.assistant_turns == "all") {
      const json& messages = record.value("messages", json());
      if (!messages.is_array() || messages.empty()) {
        return error_at(absl::InvalidArgumentError("'messages' must be a non-empty list"));
      }
      absl::Status split = SplitAllTurns(*tokenizer, options.render_chat, messages, &e,
                                         &result.boundary_mismatches);
      if (!split.ok()) return error_at(split);
      special_tokens_added = true;
    } else if (chat && !options.render_chat) {
      // No model template: a built-in one, prompt and completion encoded on their own.
      if (preference || record["completion"].size() != 1) {
        return error_at(absl::FailedPreconditionError(
            preference ? "conversational preference records need the model's chat template "
                         "(tokenizer_config.json)"
                       : "a conversational completion of several messages needs the model's chat "
                         "template (tokenizer_config.json)"));
      }
      if (tokenizer == nullptr) return error_at(absl::FailedPreconditionError("conversations need a tokenizer"));
      json messages = record["prompt"];
      messages.push_back(record["completion"][0]);
      auto rendered = RenderChat(messages, options.chat_template);
      if (!rendered.ok()) return error_at(rendered.status());
      PAFT_ASSIGN_OR_RETURN(e.prompt, tokenizer->Encode(rendered->first));
      PAFT_ASSIGN_OR_RETURN(e.completion, tokenizer->Encode(rendered->second));
    } else if (text || chat) {
      // TRL: the prompt alone and prompt + each answer tokenized as whole sequences, the answers
      // starting where those diverge. Text gets BOS and EOS; a chat template places its own.
      absl::StatusOr<PromptSplit> split;
      if (text) {
        const std::string prompt = record["prompt"];
        std::vector<std::string> wholes;
        for (const char* key : answers) wholes.push_back(prompt + record[key].get<std::string>());
        split = SplitAtPrompt(*tokenizer, prompt, wholes, options.add_bos ? tokenizer->bos_id() : -1,
                              options.add_eos ? tokenizer->eos_id() : -1);
      } else {
        split = SplitConversation(tokenizer, options.render_chat, record, answers);
      }
      if (!split.ok()) return error_at(split.status());
      e.prompt = std::move(split->prompt);
      e.completion = std::move(split->completions[0]);
      if (preference) e.rejected = std::move(split->completions[1]);
      result.boundary_mismatches += split->mismatch ? 1 : 0;
      special_tokens_added = true;
    } else if (format == "prompt_completion" || preference) {
      PAFT_ASSIGN_OR_RETURN(e.prompt,
                            Field(record, "prompt", tokenizer, vocab_limit, line_number, !preference));
      PAFT_ASSIGN_OR_RETURN(e.completion, Field(record, answers[0], tokenizer, vocab_limit,
                                                line_number, true));
      if (preference) {
        PAFT_ASSIGN_OR_RETURN(e.rejected,
                              Field(record, "rejected", tokenizer, vocab_limit, line_number, true));
      }
    } else if (format == "text") {
      PAFT_ASSIGN_OR_RETURN(e.completion,
                            Field(record, "text", tokenizer, vocab_limit, line_number, true));
    } else {
      return absl::InvalidArgumentError(absl::StrCat("unknown dataset format '", format, "'"));
    }
    if ((result.kind == DatasetKind::kPreference) != preference) {
      return absl::InvalidArgumentError(
          absl::StrCat("line ", line_number, ": mixes preference and SFT records"));
    }
    const int64_t bos = tokenizer != nullptr && !special_tokens_added ? tokenizer->bos_id() : -1;
    const int64_t eos = tokenizer != nullptr && !special_tokens_added ? tokenizer->eos_id() : -1;
    if (options.add_bos && bos >= 0) e.prompt.insert(e.prompt.begin(), static_cast<uint32_t>(bos));
    if (options.add_eos && eos >= 0) {
      e.completion.push_back(static_cast<uint32_t>(eos));
      if (preference) e.rejected.push_back(static_cast<uint32_t>(eos));
    }
    if (e.completion.empty() || (preference && e.rejected.empty())) {
      return absl::InvalidArgumentError(absl::StrCat("line ", line_number, ": empty completion"));
    }
    if (vocab_limit > 0) {  // every id, however it came: *_ids, the tokenizer, BOS/EOS
      for (const auto* ids : {&e.prompt, &e.completion, &e.rejected}) {
        for (uint32_t id : *ids) {
          if (id >= vocab_limit) {
            return absl::InvalidArgumentError(absl::StrCat("line ", line_number, ": token id ", id,
                                                           " is outside the vocabulary of ",
                                                           vocab_limit));
          }
        }
      }
    }
    if (preference && options.truncation_mode == "keep_end") {
      return absl::InvalidArgumentError(absl::StrCat(
          "line ", line_number, ": truncation_mode keep_end is not supported for preference data "
          "(TRL cuts the chosen and rejected sequences separately, so their prompts would differ); "
          "use keep_start"));
    }
    bool truncated = false;
    std::vector<std::vector<uint32_t>*> completions = {&e.completion};
    if (preference) completions.push_back(&e.rejected);
    if (!Fit(e.prompt, completions, preference ? nullptr : &e.loss_runs, options, &truncated)) {
      ++result.dropped;
      continue;
    }
    result.truncated += truncated ? 1 : 0;
    result.examples.push_back(std::move(e));
  }
  if (result.examples.empty()) {
    return absl::InvalidArgumentError("the dataset has no usable example");
  }
  return result;
}

}  // namespace paft::tokenizer
